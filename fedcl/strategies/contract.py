"""What fedcl expects of a strategy's server half, and what it gives one.

Any Flower ``Strategy`` subclass runs in fedcl (inside the guard,
:class:`~fedcl.strategies.guard.GuardedStrategy`). What it may offer beyond Flower's
interface is declared here, each as a ``Protocol`` the guard and the catalog check with
``isinstance``/``issubclass``:

- :class:`Configurable`: built from the run's configuration (``from_config``); a strategy
  without it gets fedcl's sampling settings where its constructor takes them;
- :class:`Reporting`: a :class:`RoundReport` of its last aggregation, written into
  ``metrics.jsonl`` and read by the metrics, plots, progress line and TensorBoard;
- :class:`Stateful`: state that lives across rounds, kept in every checkpoint;
- a hospital half: the class attribute ``hospital``, a
  :class:`~fedcl.strategies.hospital_half.HospitalHalf` subclass (see
  :func:`hospital_half_of`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

from flwr.app import ArrayRecord

from fedcl.errors import FedclError
from fedcl.strategies.hospital_half import HospitalHalf

if TYPE_CHECKING:
    from flwr.serverapp.strategy import Strategy

    from fedcl.config import RunConfig


class SentModel:
    """The global model of the current round, as the server sent it out.

    The guard keeps the run's one instance up to date; a strategy built with
    ``from_config(config, sent)`` reads it there (calling it returns the model).
    """

    def __init__(self) -> None:
        self.arrays: ArrayRecord | None = None

    def __call__(self) -> ArrayRecord:
        """Return the global model this round's replies started from."""
        if self.arrays is None:
            raise RuntimeError(
                "no global model sent yet: aggregate_train before configure_train, or a "
                "strategy used outside fedcl.strategies.guard.GuardedStrategy"
            )
        return self.arrays


class RoundReport(TypedDict, total=False):
    """What a strategy (and the guard) reports of one aggregation, per round.

    Every key is optional and written into ``metrics.jsonl``; the first group is what
    fedcl itself reads (drift detection, plots, progress, TensorBoard), the rest are
    the built-in strategies' own. A plug-in may report keys of its own besides.
    """

    hospitals: list[int | None]
    """The hospitals the per-hospital lists below refer to, in order."""
    decisions: list[str]
    """Per hospital: ``"accepted"`` or why it was rejected (drift detection reads it)."""
    peer_scores: Sequence[float | None]
    """Per hospital: DBC's peer score (plots, TensorBoard)."""
    evidence: Sequence[float | None]
    """Per hospital: DBC's evidence (plots)."""
    threshold: float | None
    """The filter's threshold this round (plots)."""
    dropped: list[dict[str, Any]]
    """Replies the guard dropped: ``{"hospital": ..., "reason": ...}``."""
    missing: list[int]
    """Hospitals that sent nothing this round (the guard)."""
    skipped: str
    """Why the round kept the global model (the guard: too few usable replies)."""
    extra_bytes: int
    """Bytes the strategy sent this round beside FedAvg's messages (a teacher, say)."""
    # DBC's own (docs/dbc.md, "What a round logs")
    anchor_scores: Sequence[float | None]
    all_rejected: bool
    movement: float | None
    shift_length: int
    shift_started: bool  # this round began a shift (the boundary detection reads it)
    teacher_round: int  # the round of the hospitals' teacher (0: none)
    consolidation: dict[str, Any] | None
    seconds_scoring: float
    seconds_consolidation: float
    # FLTrust's own: each hospital's trust score
    trust: list[float]


@runtime_checkable
class Configurable(Protocol):
    """A strategy that builds itself from the run's configuration."""

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> Strategy:
        """Return the strategy for ``config``; ``sent`` holds each round's global model."""
        ...


@runtime_checkable
class Reporting(Protocol):
    """A strategy that reports its last aggregation."""

    round_report: RoundReport | None


@runtime_checkable
class Stateful(Protocol):
    """A strategy with state across rounds (restored from checkpoints on ``--resume``)."""

    def state_dict(self) -> dict[str, Any]:
        """Return the state (tensors, numbers, lists; what ``torch.save`` writes)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s result."""
        ...


def hospital_half_of(strategy: type) -> type[HospitalHalf]:
    """Return the hospital half of a strategy class (:class:`HospitalHalf`: none).

    A strategy declares it as the class attribute ``hospital``.

    Raises
    ------
    FedclError
        If ``hospital`` is there but is not a :class:`HospitalHalf` subclass.
    """
    half = getattr(strategy, "hospital", HospitalHalf)  # the one place it is looked up
    if not (isinstance(half, type) and issubclass(half, HospitalHalf)):
        raise FedclError(
            f"strategy {strategy.__name__}: its 'hospital' attribute must be a subclass "
            f"of fedcl.strategies.hospital_half.HospitalHalf, got {half!r}"
        )
    return half
