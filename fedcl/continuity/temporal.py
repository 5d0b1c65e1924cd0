"""The temporal side: the anchor of the global model's past, and when a shift is shared.

The anchor is an exponential moving average of the global model's outputs on R; a
round whose movement (how far the accepted replies moved the global model's
behaviour on R) jumps above the calm rounds' is a shift all hospitals share, and is
consolidated toward the anchor (:mod:`fedcl.continuity.consolidation`).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch

MIN_CALM = 2  # calm rounds before a shift can be told from them (shared_shift)


def update_anchor(anchor: torch.Tensor | None, z: torch.Tensor, beta: float) -> torch.Tensor:
    """EMA anchor ``A_t = beta * A_{t-1} + (1 - beta) * Z(theta_t)``; starts at ``z``."""
    return z.clone() if anchor is None else beta * anchor + (1 - beta) * z


def shared_shift(history: Sequence[float], score: float, rho: float, window: int) -> bool:
    """Whether this round's movement ``score`` jumps above its recent history.

    ``score`` is the round's movement (the median anchor score of the accepted replies:
    how far the hospitals moved the global model's behaviour on R this round); a shift
    that all hospitals share (new stain, new case mix) moves every one of them at once,
    well past the movement of the rounds before, while ordinary learning moves less and
    less. True when ``score > (1 + rho) * median`` of the last ``window`` values of
    ``history``; False with fewer than :data:`MIN_CALM` values: one round is no level
    to jump from (the evidence: docs/decision-log.md, "calm history after warm-up, one
    consolidation step, and two calm rounds before a shift").
    """
    recent = list(history)[-window:]
    return len(recent) >= MIN_CALM and score > (1 + rho) * statistics.median(recent)


class ShiftDetector:
    """Tells the rounds of a shift all hospitals share, from the round's movement alone.

    Each round's movement (how far the accepted replies moved the global model's
    behaviour on R) is compared with the calm rounds' (:func:`shared_shift`). A round
    above the calm level belongs to a shift; the shift lasts until a round is calm
    again, and is consolidated for at most ``bound`` of its rounds (0: all of them), so
    that consolidation cannot keep its own trigger going (re-learning what it undid is
    movement too). A round that jumps above the shift's own lowest movement by the same
    factor starts a new shift: with short stages the movement may not get back to calm
    before the next stage begins.

    Parameters
    ----------
    rho : float
        A round is a shift when its movement is above ``(1 + rho)`` x the calm median.
    window : int
        Calm rounds that make the level (the last ``window``).
    bound : int
        Rounds of one shift to consolidate, at most (0: no bound).
    """

    def __init__(self, *, rho: float, window: int, bound: int) -> None:
        self.rho, self.window, self.bound = rho, window, bound
        self.calm: list[float] = []  # movements of the calm rounds
        self.shift: list[float] = []  # movements of the current shift's rounds
        self.started = False  # whether the last update began a shift

    def update(self, movement: float) -> bool:
        """Record a round's movement; return whether to consolidate this round.

        :attr:`started` says whether this round began a shift (the first round above
        the calm level, or a new shift on top of the last one).
        """
        if not shared_shift(self.calm, movement, self.rho, self.window):
            self.calm.append(movement)
            self.shift, self.started = [], False
            return False
        if self.shift and movement > (1 + self.rho) * min(self.shift):
            self.shift = []  # a new shift on top of the last one
        self.shift.append(movement)
        self.started = len(self.shift) == 1
        return not self.bound or len(self.shift) <= self.bound

    def state_dict(self) -> dict[str, list[float]]:
        """Return the detector's history (for checkpoints)."""
        return {"calm": list(self.calm), "shift": list(self.shift)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s history."""
        self.calm, self.shift = list(state["calm"]), list(state["shift"])
