"""Federated learning without forgetting: FedAvg whose hospitals distil toward the past.

A federated continual-learning baseline that needs no old data, neither at the server
nor at the hospitals: each hospital trains on its current tiles with the segmentation
loss plus LwF's distillation toward the global model of the start of the current stage
(:mod:`fedcl.distillation`); the server averages as FedAvg does. In the first stage
there is nothing to remember and the run is FedAvg's.

The server tells the hospitals the weight and temperature (``distill-weight``,
``distill-temperature`` in the train config, as FedProx sends ``proximal-mu``). Each
hospital keeps its teacher in ``Context.state``: the first global model it receives in
a stage. The server remembers the same model (it is in every checkpoint) and sends it
once in the first round after a resume, when the hospitals' state is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

# Message keys of the train config and content (read by fedcl.hospital).
WEIGHT_KEY, TEMPERATURE_KEY, TEACHER_KEY = "distill-weight", "distill-temperature", "teacher"


class LwF(FedAvg):
    """FedAvg with LwF distillation at the hospitals.

    Parameters
    ----------
    distill_weight : float
        Weight of the distillation term beside the segmentation loss (LwF's lambda).
    temperature : float
        Softmax temperature of the distillation.
    stage_of : callable
        ``stage_of(server_round)``: the 0-based stage a round belongs to.
    **kwargs
        FedAvg's arguments.
    """

    def __init__(
        self,
        *,
        distill_weight: float,
        temperature: float,
        stage_of: Callable[[int], int],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.distill_weight = distill_weight
        self.temperature = temperature
        self.stage_of = stage_of
        self.teacher: ArrayRecord | None = None  # the global model at the current stage's start
        self.teacher_stage = 0
        self.resumed = False  # restored from a checkpoint: the hospitals lost their teacher

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, telling the hospitals how to distil (and whom, after a resume)."""
        stage = self.stage_of(server_round)
        if stage > 0 and stage != self.teacher_stage:
            self.teacher, self.teacher_stage, self.resumed = arrays, stage, False
        config[WEIGHT_KEY] = self.distill_weight
        config[TEMPERATURE_KEY] = self.temperature
        messages = list(super().configure_train(server_round, arrays, config, grid))
        if self.resumed and self.teacher is not None:
            for message in messages:
                message.content[TEACHER_KEY] = self.teacher
            self.resumed = False
        return messages

    def state_dict(self) -> dict[str, Any]:
        """Return the teacher and its stage (for checkpoints)."""
        teacher = None if self.teacher is None else self.teacher.to_torch_state_dict()
        return {"teacher": teacher, "teacher_stage": self.teacher_stage}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next round sends the teacher to the hospitals."""
        teacher: dict[str, torch.Tensor] | None = state["teacher"]
        self.teacher = None if teacher is None else ArrayRecord(teacher)
        self.teacher_stage = state["teacher_stage"]
        self.resumed = True
