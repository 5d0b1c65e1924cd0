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


def loss_jump(previous: float | None, loss: float | None, jump: float) -> bool:
    """Whether the hospitals' first loss jumped above ``(1 + jump)`` x last round's.

    ``loss`` is the round's mean over the hospitals of the received model's loss on
    their first batches: how new their tiles are to it. Learning lowers it from round
    to round; new tissue or new classes raise it at once, for every hospital, however
    firmly a teacher holds their training (which damps the movement). False with
    ``jump`` 0 (off) or without both values.
    """
    if jump <= 0 or previous is None or loss is None:
        return False
    return loss > (1 + jump) * previous


class ShiftDetector:
    """Tells the rounds of a shift all hospitals share, from the round's movement.

    Each round's movement (how far the accepted replies moved the global model's
    behaviour on R) is compared with the calm rounds' (:func:`shared_shift`). A round
    above the calm level belongs to a shift; the shift lasts until a round is calm
    again, and is consolidated for at most ``bound`` of its rounds (0: all of them), so
    that consolidation cannot keep its own trigger going (re-learning what it undid is
    movement too). A round that jumps above the shift's own lowest movement by the same
    factor starts a new shift: with short stages the movement may not get back to calm
    before the next stage begins. With ``loss_jump`` > 0 a round whose hospitals' first
    loss jumps (:func:`loss_jump`) starts a new shift too, whatever the movement.

    Parameters
    ----------
    rho : float
        A round is a shift when its movement is above ``(1 + rho)`` x the calm median.
    window : int
        Calm rounds that make the level (the last ``window``).
    bound : int
        Rounds of one shift to consolidate, at most (0: no bound).
    loss_jump : float
        A round whose first loss is above ``(1 + loss_jump)`` x the last round's starts
        a shift (0: the movement alone).
    """

    def __init__(self, *, rho: float, window: int, bound: int, loss_jump: float = 0.0) -> None:
        self.rho, self.window, self.bound = rho, window, bound
        self.loss_jump = loss_jump
        self.calm: list[float] = []  # movements of the calm rounds
        self.shift: list[float] = []  # movements of the current shift's rounds
        self.started = False  # whether the last update began a shift
        self.jumped = False  # whether the last update's first loss jumped
        self.last_loss: float | None = None  # the last update's first loss

    def update(self, movement: float, first_loss: float | None = None) -> bool:
        """Record a round's movement and first loss; return whether to consolidate.

        :attr:`started` says whether this round began a shift (the first round above
        the calm level, a new shift on top of the last one, or a first loss that
        jumped: :attr:`jumped`).
        """
        self.jumped = loss_jump(self.last_loss, first_loss, self.loss_jump)
        if first_loss is not None:
            self.last_loss = first_loss
        if not self.jumped and not shared_shift(self.calm, movement, self.rho, self.window):
            self.calm.append(movement)
            self.shift, self.started = [], False
            return False
        if self.jumped or (self.shift and movement > (1 + self.rho) * min(self.shift)):
            self.shift = []  # a new shift on top of the last one
        self.shift.append(movement)
        self.started = len(self.shift) == 1
        return not self.bound or len(self.shift) <= self.bound

    def state_dict(self) -> dict[str, Any]:
        """Return the detector's history (for checkpoints)."""
        return {"calm": list(self.calm), "shift": list(self.shift), "last_loss": self.last_loss}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s history (older checkpoints hold no first loss)."""
        self.calm, self.shift = list(state["calm"]), list(state["shift"])
        self.last_loss = state.get("last_loss")
