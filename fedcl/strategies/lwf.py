"""Federated learning without forgetting: FedAvg whose hospitals distil toward the past.

A federated continual-learning baseline that needs no old data, neither at the server
nor at the hospitals: each hospital trains on its current tiles with the segmentation
loss plus LwF's distillation toward the global model of the start of the current stage
(:mod:`fedcl.distillation`); the server averages as FedAvg does. In the first stage
there is nothing to remember and the run is FedAvg's.

The server half tells the hospitals the weight and temperature (``distill-weight``,
``distill-temperature`` in the train config, as FedProx sends ``proximal-mu``). The
hospital half (:class:`LwFHospital`) keeps its teacher in ``Context.state``: the first
global model it receives in a stage. The server remembers the same model (it is in
every checkpoint) and sends it once in the first round after a resume, when the
hospitals' state is gone.

Both halves read the stage boundaries from the scenario: this LwF is told when the
data shifts (an oracle a real federation does not have).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from fedcl.config import RunConfig, Section, opt
from fedcl.distillation import Distillation, current_classes, unbiased_loss
from fedcl.scenarios import scenario_of
from fedcl.strategies.contract import SentModel
from fedcl.strategies.flower import sampling
from fedcl.strategies.hospital_half import HospitalHalf
from fedcl.training import Penalty

# Message keys of the train config and content (read by the hospital half).
WEIGHT_KEY, TEMPERATURE_KEY, TEACHER_KEY = "distill-weight", "distill-temperature", "teacher"
TERM_KEY, UNBIASED_KEY = "distill-term", "unbiased-loss"
# Context.state entry of a hospital's teacher (and its "-meta": the stage it teaches).
_STATE_KEY = "fedcl-teacher"


@dataclass(frozen=True, kw_only=True)
class LwFSettings(Section):
    """Learning without Forgetting's own keys (``lwf-<name>``)."""

    PREFIX: ClassVar[str] = "lwf-"

    # LwF's usual values (Li and Hoiem 2018): the two losses weighted equally, T = 2.
    weight: float = opt(
        1.0,
        "LwF: weight of the distillation toward the last stage's model",
        section="strategy",
        rule=">= 0",
    )
    temperature: float = opt(
        2.0, "LwF: softmax temperature of the distillation", section="strategy", rule="> 0"
    )
    # mib: MiB's unbiased distillation (the class shift's background-aware baseline)
    term: str = opt(
        "kl",
        "LwF: the distillation: kl, or mib (the classes the current masks annotate "
        "folded into background; for the class shift)",
        section="strategy",
        choices=("kl", "mib"),
    )
    # MiB's other half: the labels' background may be an old class
    unbiased_loss: bool = opt(
        False,
        "LwF: MiB's unbiased loss from the second stage on (classes not annotated now "
        "count as background; for the class shift)",
        section="strategy",
    )


class LwFHospital(HospitalHalf):
    """LwF's hospital half: distil toward the first global model of the current stage.

    The teacher of a stage is the first global model the hospital receives in it, kept
    in ``Context.state`` (or the server's copy, sent after a resume); in the first stage
    there is none.
    """

    def penalties(self, model: nn.Module) -> list[Penalty]:
        """``[Distillation(teacher)]`` from the second stage on, with the server's settings."""
        now = self.now
        weight = float(now.sent.get(WEIGHT_KEY, 0.0))  # type: ignore[arg-type]
        temperature = float(now.sent.get(TEMPERATURE_KEY, 1.0))  # type: ignore[arg-type]
        stage = scenario_of(now.config).stage_of(now.server_round)
        if weight == 0 or stage == 0:
            return []
        meta = now.state.config_records.get(f"{_STATE_KEY}-meta")
        teacher_arrays = now.content.array_records.get(TEACHER_KEY)  # after a resume
        if teacher_arrays is None and (meta is None or meta.get("stage") != stage):
            teacher_arrays = ArrayRecord(
                {k: v.detach().cpu() for k, v in model.state_dict().items()}
            )
        if teacher_arrays is not None:
            now.state[_STATE_KEY] = teacher_arrays
            now.state[f"{_STATE_KEY}-meta"] = ConfigRecord({"stage": stage})
        teacher = self.kept_model(_STATE_KEY, model)
        term = str(now.sent.get(TERM_KEY, "kl"))
        return [
            Distillation(
                teacher,
                weight=weight,
                temperature=temperature,
                term=term,
                new_classes=current_classes(term, lambda: self.annotated),
            )
        ]

    def criterion(self) -> nn.Module | None:
        """MiB's unbiased loss from the second stage on with ``unbiased-loss`` (else fedcl's)."""
        now = self.now
        if (
            not now.sent.get(UNBIASED_KEY)
            or scenario_of(now.config).stage_of(now.server_round) == 0
        ):
            return None
        return unbiased_loss(self.annotated)


class LwF(FedAvg):
    """FedAvg with LwF distillation at the hospitals (:class:`LwFHospital`).

    Parameters
    ----------
    distill_weight : float
        Weight of the distillation term beside the segmentation loss (LwF's lambda).
    temperature : float
        Softmax temperature of the distillation.
    term : str
        ``kl`` or ``mib`` (:func:`fedcl.distillation.continuity_term`).
    unbiased : bool
        MiB's unbiased loss at the hospitals from the second stage on.
    stage_of : callable
        ``stage_of(server_round)``: the 0-based stage a round belongs to.
    **kwargs
        FedAvg's arguments.
    """

    hospital = LwFHospital
    sections: ClassVar[tuple[type[Section], ...]] = (LwFSettings,)

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> LwF:
        """Every hospital every round; the ``lwf-*`` settings; the scenario's stages."""
        own = config.section(LwFSettings)
        return cls(
            **sampling(config),
            distill_weight=own.weight,
            temperature=own.temperature,
            term=own.term,
            unbiased=own.unbiased_loss,
            stage_of=scenario_of(config).stage_of,
        )

    def __init__(
        self,
        *,
        distill_weight: float,
        temperature: float,
        stage_of: Callable[[int], int],
        term: str = "kl",
        unbiased: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.distill_weight = distill_weight
        self.temperature = temperature
        self.term = term
        self.unbiased = unbiased
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
        config[TERM_KEY] = self.term
        config[UNBIASED_KEY] = self.unbiased
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
