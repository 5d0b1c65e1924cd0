"""The seed protocol of a study and its paired differences (pure: no torch, no Flower).

A constant (a learning rate, DBC's ``tau``, a number of rounds) may be chosen on the
tuning seeds only; a table that supports a claim is read on other seeds, the reporting
seeds, on which nothing was chosen. A claim "A beats B" is a paired difference: for
every seed both ran, A's figure minus B's (same data, same drifted hospitals, same
initial model), summarised by its mean and a Student t interval over the seeds.
``fedcl compare`` writes these differences against a baseline entry
(:func:`fedcl.compare.write_comparison`); the protocol is in ``docs/evaluation.md``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from scipy import stats

TUNING_SEEDS: tuple[int, ...] = (0, 1, 2)  # the only seeds a constant may be chosen on
# Five reporting seeds: far from the tuning seeds (a study that grows its tuning set to
# 0-9 still leaves them untouched), and no figure of versions 0.1-0.3 was run on them,
# so nothing was ever chosen on them. Five: a t interval with 4 degrees of freedom
# (t = 2.78) is half as wide as one with 2 (t = 4.30) at the same spread.
REPORTING_SEEDS: tuple[int, ...] = (10, 11, 12, 13, 14)
CONFIDENCE = 0.95  # of every interval fedcl writes


@dataclass(frozen=True)
class Paired:
    """A paired difference over seeds: ``a[s] - b[s]`` for the seeds both have.

    Attributes
    ----------
    mean : float or None
        Mean difference; ``None`` when no seed has both figures (``n = 0``).
    low : float or None
        Lower end of the interval; ``None`` when ``n < 2`` (no spread to estimate).
    high : float or None
        Upper end of the interval; ``None`` when ``n < 2``.
    n : int
        Number of seeds both figures have.
    seeds : tuple of int
        Those seeds, ascending.
    """

    mean: float | None
    low: float | None
    high: float | None
    n: int
    seeds: tuple[int, ...]

    def cell(self) -> str:
        """Return the difference as a table cell: ``+0.123 [0.101, 0.145] n=5``.

        ``n/a`` without a shared seed; ``+0.123 n=1`` (no interval) with one.
        """
        if self.mean is None:
            return "n/a"
        if self.low is None or self.high is None:
            return f"{self.mean:+.3f} n={self.n}"
        return f"{self.mean:+.3f} [{self.low:.3f}, {self.high:.3f}] n={self.n}"


def paired(
    a: Mapping[int, float | None],
    b: Mapping[int, float | None],
    *,
    confidence: float = CONFIDENCE,
) -> Paired:
    """Return the mean paired difference ``a - b`` over seeds, with a Student t interval.

    With ``d_s = a[s] - b[s]`` for the ``n`` seeds ``s`` where both figures are present:
    the mean ``d = sum_s d_s / n``, the sample standard deviation
    ``sd = sqrt(sum_s (d_s - d)^2 / (n - 1))`` and the interval
    ``d -+ t_{(1 + c) / 2, n - 1} * sd / sqrt(n)``, with ``t_{q, k}`` the ``q`` quantile
    of Student's t distribution with ``k`` degrees of freedom and ``c`` the confidence
    (0.95: ``t_{0.975, 4} = 2.776`` for five seeds, ``t_{0.975, 2} = 4.303`` for three).
    The interval assumes the differences are independent draws of one normal
    distribution; with few seeds it is wide, which is the point.

    Parameters
    ----------
    a : Mapping[int, float or None]
        Per seed, the figure of the entry (e.g. DBC's final Dice); ``None``: the run has
        no such figure (dropped).
    b : Mapping[int, float or None]
        Per seed, the same figure of the baseline (e.g. FedAvg's).
    confidence : float, optional
        Coverage of the interval, in (0, 1). Default 0.95.

    Returns
    -------
    Paired
        ``n = 0``: no mean; ``n = 1``: the mean, no interval; otherwise both. A
        difference that is the same on every seed has a zero-width interval.

    Raises
    ------
    ValueError
        If ``confidence`` is not in (0, 1).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    pairs = [
        (s, x, y)
        for s in sorted(a.keys() & b.keys())
        if (x := a[s]) is not None and (y := b[s]) is not None
    ]
    seeds = tuple(s for s, _, _ in pairs)
    diffs = [x - y for _, x, y in pairs]
    n = len(diffs)
    if n == 0:
        return Paired(None, None, None, 0, seeds)
    mean = statistics.fmean(diffs)
    if n == 1:
        return Paired(mean, None, None, 1, seeds)
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * statistics.stdev(diffs) / math.sqrt(n)
    return Paired(mean, mean - half, mean + half, n, seeds)


def seed_note(seeds: Iterable[int]) -> list[str]:
    """Return what a table of these seeds says of them: their roles, a warning when mixed.

    Parameters
    ----------
    seeds : Iterable[int]
        Every seed the table holds (any order, repeats allowed).

    Returns
    -------
    list of str
        One line saying which seeds are tuning seeds (:data:`TUNING_SEEDS`) and which
        report; a second, a warning, when the table holds both kinds.
    """
    held = sorted(set(seeds))
    tuning = ", ".join(str(s) for s in held if s in TUNING_SEEDS)
    reporting = ", ".join(str(s) for s in held if s not in TUNING_SEEDS)
    if not reporting:
        suggested = ",".join(str(s) for s in REPORTING_SEEDS)
        note = (
            f"Seeds {tuning}: tuning seeds only, a table to choose constants on; "
            f"read claims on reporting seeds (`--seeds {suggested}`)."
        )
        return [note]
    if not tuning:
        return [f"Seeds {reporting}: reporting seeds (no constant was chosen on them)."]
    warning = (
        f"**Warning: this table mixes tuning seeds ({tuning}) with reporting seeds "
        f"({reporting}); read claims on the reporting seeds alone.**"
    )
    return [f"Seeds {tuning}: tuning seeds; {reporting}: reporting seeds.", warning]
