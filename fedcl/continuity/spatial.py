"""The spatial filter: which replies depart from the peer consensus, round after round.

Each reply's peer score is its Barlow continuity against the element-wise median of
all replies' outputs. The first version's rule rejects a score above a robust
threshold within one round (:func:`consensus_filter`); the evidence rule compares each
score with the honest majority's typical score and rejects a hospital whose evidence
stays high over rounds (:class:`EvidenceFilter`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Sequence
from typing import Any

MAD_SCALE = 1.4826  # MAD -> standard deviation for normally distributed scores
EVIDENCE_EPS = 1e-4  # peer scores below this are "identical" (identical models: < 1e-6)


def consensus_threshold(
    peer_scores: Sequence[float], kappa: float = 3.0, floor: float = 0.05
) -> float | None:
    """Rejection threshold ``median + kappa * max(1.4826 * MAD, floor * median + 1e-4)``.

    Returns None with fewer than 3 scores: too few peers to call one an outlier.
    """
    if len(peer_scores) < 3:
        return None
    median = statistics.median(peer_scores)
    mad = MAD_SCALE * statistics.median(abs(p - median) for p in peer_scores)
    return median + kappa * max(mad, floor * median + 1e-4)


def consensus_filter(
    peer_scores: Sequence[float], kappa: float = 3.0, floor: float = 0.05
) -> list[bool]:
    """Accept (True) or reject each reply by its peer score (the first version's round rule).

    Parameters
    ----------
    peer_scores : sequence of float
        ``p_k = L_BC(Z_med, Z(theta_k))`` per reply, ``Z_med`` the element-wise median
        of the replies' outputs.
    kappa : float
        Threshold in robust standard deviations above the median (default 3).
    floor : float
        Lower bound on the spread as a fraction of the median score (default 0.05),
        so near-identical replies do not make every small difference an outlier.

    Returns
    -------
    list of bool
        ``p_k <= threshold``; all True with fewer than 3 replies.
    """
    threshold = consensus_threshold(peer_scores, kappa, floor)
    return [threshold is None or p <= threshold for p in peer_scores]


def peer_evidence(peer_scores: Sequence[float], floor: float = 0.0) -> list[float] | None:
    """Each reply's log peer score relative to the honest majority's typical score.

    ``e_k = log((p_k + eps) / (max(c, floor) + eps))`` with ``c`` the median of the
    lowest ``floor(n / 2) + 1`` scores: with fewer than half the replies shifted, those
    are honest, so ``c`` is an honest hospital's score whatever the shifted ones do (a
    median and MAD over all replies are pulled up by 2 shifted out of 5). In log units
    because honest scores are skewed: a typical honest reply is within a factor of 2-3
    of ``c`` (``|e| < 1``), yet a single round may put one 5-8 times above it early in
    training. ``floor``: in a calm federation ``c`` is tiny, and a hospital that is only
    a little different stands many times above it; below ``floor`` the typical score is
    no yardstick (``L_BC`` is a mean squared correlation deficit per class: 0.02 is a
    correlation of about 0.86 with the consensus). None with fewer than 3 replies: too
    few peers to say what is typical.
    """
    if len(peer_scores) < 3:
        return None
    typical = max(typical_peer_score(peer_scores), floor)
    return [math.log((p + EVIDENCE_EPS) / (typical + EVIDENCE_EPS)) for p in peer_scores]


def largest_shares(columns: Sequence[Sequence[float | None]]) -> list[float]:
    """Return each reply's largest class share of its peer score (0 where none is kept).

    ``columns``: per reply, :func:`~fedcl.continuity.barlow_continuity_columns` against
    the consensus. The peer score is the mean of these shares; a hospital whose
    annotators confuse one class with another moves that class, and the mean over all
    classes dilutes it.
    """
    return [max((c for c in shares if c is not None), default=0.0) for shares in columns]


def typical_peer_score(peer_scores: Sequence[float]) -> float:
    """Return the honest majority's typical peer score: the median of the lowest n // 2 + 1."""
    return statistics.median(sorted(peer_scores)[: len(peer_scores) // 2 + 1])


def persistent_outlier(evidence: Sequence[float], tau: float, window: int) -> bool:
    """Reject a hospital whose mean evidence over its last ``window`` rounds exceeds ``tau``.

    A shifted hospital is far from its peers round after round; an honest one only
    now and then. Averaging a hospital's :func:`peer_evidence` over the rounds it
    replied separates the two where one round's scores overlap (the one-round rule
    rejected honest replies under iid and missed shifted ones in early rounds:
    docs/decision-log.md, "the evidence filter replaces the one-round rule").
    """
    recent = list(evidence)[-window:]
    return bool(recent) and statistics.fmean(recent) > tau


class EvidenceFilter:
    """DBC's spatial filter, with each hospital's evidence kept over the rounds.

    The rules (``filter_rule``): ``evidence`` rejects a hospital whose mean
    :func:`peer_evidence` over its last ``window`` replies exceeds ``tau``
    (:func:`persistent_outlier`); ``round``, the first version's one-round threshold
    (:func:`consensus_threshold`); ``oracle`` rejects exactly the hospitals ``drifted``
    names (simulation only: the bound of any filter). The evidence and oracle rules keep
    every hospital's evidence, also with ``filter`` off (then nothing is rejected).

    Parameters
    ----------
    settings : DBCSettings
        ``filter_rule``, ``filter``, ``tau``, ``evidence_floor``, ``window``, ``kappa``,
        ``floor``.
    drifted : callable, optional
        ``drifted(hospital, server_round)``: the scenario's truth (the oracle needs it).
    """

    def __init__(
        self, settings: Any, drifted: Callable[[Hashable, int], bool] | None = None
    ) -> None:
        if settings.filter_rule == "oracle" and drifted is None:
            raise ValueError("filter_rule 'oracle' needs drifted(hospital, round): the truth")
        self.settings = settings
        self.drifted = drifted
        self.evidence: dict[Hashable, list[float]] = {}  # per hospital, rounds it replied

    def update(
        self, hospitals: Sequence[Hashable], peer: Sequence[float], server_round: int
    ) -> tuple[list[bool], float | None]:
        """Record this round's evidence; return which replies to reject and the threshold.

        The threshold is the round rule's (None for the other rules, or with fewer
        than 3 replies).
        """
        s = self.settings
        if s.filter_rule == "round":
            threshold = consensus_threshold(peer, s.kappa, s.floor)
            if not s.filter or threshold is None:
                return [False] * len(peer), None
            return [p > threshold for p in peer], threshold
        evidence = peer_evidence(peer, s.evidence_floor)
        for hospital, e in zip(hospitals, evidence or [], strict=False):
            self.evidence.setdefault(hospital, []).append(e)
        if s.filter_rule == "oracle":  # the truth, with any number of replies
            assert self.drifted is not None
            return [s.filter and self.drifted(h, server_round) for h in hospitals], None
        if evidence is None:  # fewer than 3 replies: nothing to compare with
            return [False] * len(peer), None
        rejected = [
            s.filter and persistent_outlier(self.evidence[h], s.tau, s.window) for h in hospitals
        ]
        return rejected, None

    def mean_evidence(self, hospital: Hashable) -> float | None:
        """Return ``hospital``'s mean evidence over its last ``window`` replies (None: none)."""
        history = self.evidence.get(hospital)
        return statistics.fmean(history[-self.settings.window :]) if history else None

    def state_dict(self) -> dict[Hashable, list[float]]:
        """Return every hospital's evidence (for checkpoints)."""
        return {h: list(e) for h, e in self.evidence.items()}

    def load_state_dict(self, state: dict[Hashable, list[float]]) -> None:
        """Restore :meth:`state_dict`'s evidence."""
        self.evidence = {h: list(e) for h, e in state.items()}
