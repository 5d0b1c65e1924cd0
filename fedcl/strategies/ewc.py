"""Federated elastic weight consolidation: hold the weights that mattered for past stages.

EWC (Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS
2017) adds ``(lambda / 2) * sum_i F_i (w_i - w*_i)^2`` to the loss of a new task: ``w*``
the weights at the end of the old one, ``F`` the diagonal of their Fisher information
on the old data (how much the loss there depends on each weight). Here in its online
form (one accumulated ``F``, the newest anchor: Schwarz et al., "Progress & Compress",
ICML 2018) and federated as FedCurv shares it (Shoham et al., 2019): the hospitals
estimate ``F`` on their own tiles and the server averages their estimates.

A stage ``s >= 1`` goes like this (the stage boundaries read from the scenario: an
oracle, as LwF's are):

1. Its first round: the model a hospital receives is the global model of the last
   stage's end, the anchor. The hospital still holds that stage's training tiles (they
   go once its last model is scored, in this round) and estimates the Fisher diagonal
   there (:func:`fisher_diagonal`: the mean squared gradient of the segmentation loss per
   batch, as Avalanche's EWC does), trains with it added to the federation's importance
   of the stages before, and sends the estimate with its update.
2. The server averages the estimates (weighted by tiles), scales the average to mean 1
   (:func:`normalised`: ``ewc-weight`` then reads as FedProx's ``mu`` on an average
   weight) and adds it to the importance of the stages before. It sends that importance
   and the anchor once to each hospital in the next round (and again after a resume).
3. The stage's other rounds: every hospital holds its weights to the anchor with the
   federation's importance (:class:`~fedcl.strategies.fedprox.Proximal`).

In the first stage there is nothing to hold and the run is FedAvg's. If no estimate
reaches the server in a stage's first round, the hospitals estimate again in the next
one, on that round's tiles.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg
from torch import nn

from fedcl.config import RunConfig, Section, opt
from fedcl.data.dataset import TileDataset
from fedcl.errors import FedclError
from fedcl.scenarios import scenario_of
from fedcl.strategies.contract import RoundReport, SentModel, SentOnce
from fedcl.strategies.fedprox import Proximal
from fedcl.strategies.flower import sampling
from fedcl.strategies.hospital_half import HospitalHalf
from fedcl.training import Penalty, device_of, segmentation_loss

# Train config keys: the penalty's weight; the stage whose importance the server holds
# (importance of the stages before it; 0: none yet).
WEIGHT_KEY, STAGE_KEY = "ewc-weight", "ewc-stage"
# Message content keys: a hospital's Fisher estimate (reply); the federation's importance
# and its anchor (train message, once per hospital).
ESTIMATE_KEY, IMPORTANCE_KEY, ANCHOR_KEY = "ewc-estimate", "ewc-importance", "ewc-anchor"
# Context.state entries of the importance and anchor a hospital holds ("-meta": the stage)
_IMPORTANCE, _ANCHOR = "fedcl-ewc-importance", "fedcl-ewc-anchor"


@dataclass(frozen=True, kw_only=True)
class EWCSettings(Section):
    """Federated EWC's own key (``ewc-<name>``)."""

    PREFIX: ClassVar[str] = "ewc-"

    # Chosen on tuning seed 0 of the tissue shift (0.01-10000): weights up to 10 left it
    # FedAvg, 1000 had the best ACC (docs/decision-log.md).
    weight: float = opt(
        1000.0,
        "EWC: weight of the penalty on moving the weights past stages needed "
        "(importance scaled to mean 1 per stage; 0 = FedAvg)",
        section="strategy",
        rule=">= 0",
    )


def fisher_diagonal(
    model: nn.Module, data: TileDataset, batch_size: int
) -> dict[str, torch.Tensor]:
    """Return the mean squared gradient of the segmentation loss per parameter on ``data``.

    The empirical Fisher information's diagonal, one gradient per batch (in order). The
    model is run in eval mode: its BatchNorm statistics are left as they are.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    loss_fn, device, was_training, batches = (
        segmentation_loss(),
        device_of(model),
        model.training,
        0,
    )
    model.eval()
    for images, masks in data.batches(batch_size):
        loss = loss_fn(model(images.to(device)), masks.to(device))
        for name, grad in zip(
            params, torch.autograd.grad(loss, list(params.values())), strict=True
        ):
            sums[name] += grad.detach() ** 2
        batches += 1
    model.train(was_training)
    return {n: s / max(batches, 1) for n, s in sums.items()}


def normalised(importance: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return ``importance`` divided by its mean over every weight (all zeros stay zeros)."""
    total = sum(float(v.sum()) for v in importance.values())
    count = sum(v.numel() for v in importance.values())
    mean = total / max(count, 1)
    return {n: v / mean if mean > 0 else v.clone() for n, v in importance.items()}


class EWCHospital(HospitalHalf):
    """EWC's hospital half: estimate the Fisher diagonal at a stage's start, then hold."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.estimate: dict[str, torch.Tensor] | None = None  # this round's, sent back

    def penalties(self, model: nn.Module) -> list[Penalty]:
        """``[Proximal(anchor, importance)]`` from the second stage on."""
        now = self.now
        weight = float(now.sent.get(WEIGHT_KEY, 0.0))  # type: ignore[arg-type]
        stage = scenario_of(now.config).stage_of(now.server_round)
        if weight == 0 or stage == 0:
            return []
        if IMPORTANCE_KEY in now.content.array_records:  # the federation's, sent once
            now.state[_IMPORTANCE] = now.content.array_records[IMPORTANCE_KEY]
            now.state[_ANCHOR] = now.content.array_records[ANCHOR_KEY]
            now.state[f"{_IMPORTANCE}-meta"] = ConfigRecord({"stage": now.sent[STAGE_KEY]})
        meta = now.state.config_records.get(f"{_IMPORTANCE}-meta")
        held = 0 if meta is None else int(meta["stage"])  # type: ignore[arg-type]
        if held == stage:
            importance = now.state.array_records[_IMPORTANCE].to_torch_state_dict()
            anchor = now.state.array_records[_ANCHOR].to_torch_state_dict()
            return [Proximal(model, weight, anchor=anchor, importance=importance)]
        if held != stage - 1:
            raise FedclError(
                f"hospital {now.hospital}: EWC in stage {stage} needs the importance of "
                f"the stages before it, but holds that of stage {held}"
            )
        # the stage's first round: the model received is the last stage's end (the anchor)
        self.estimate = fisher_diagonal(model, now.own_tiles(), now.config.batch_size)
        own = normalised(self.estimate)
        if held > 0:
            before = now.state.array_records[_IMPORTANCE].to_torch_state_dict()
            own = {n: v + before[n].to(v.device) for n, v in own.items()}
        return [Proximal(model, weight, importance=own)]

    def reply(self, content: RecordDict) -> None:
        """Send this round's Fisher estimate back, if there is one."""
        if self.estimate is not None:
            content[ESTIMATE_KEY] = ArrayRecord({n: v.cpu() for n, v in self.estimate.items()})


class FederatedEWC(FedAvg):
    """FedAvg whose hospitals hold the weights past stages needed (:class:`EWCHospital`).

    Parameters
    ----------
    weight : float
        ``lambda``: the penalty's weight (the importance has mean 1 per stage).
    stage_of : callable
        ``stage_of(server_round)``: the 0-based stage a round belongs to.
    sent : SentModel
        The global model each round started from (the anchor of a stage).
    **kwargs
        FedAvg's arguments.
    """

    hospital = EWCHospital
    sections: ClassVar[tuple[type[Section], ...]] = (EWCSettings,)

    @classmethod
    def from_config(cls, config: RunConfig, sent: SentModel) -> FederatedEWC:
        """Every hospital every round; ``ewc-weight``; the scenario's stages."""
        return cls(
            **sampling(config),
            weight=config.section(EWCSettings).weight,
            stage_of=scenario_of(config).stage_of,
            sent=sent,
        )

    def __init__(
        self,
        *,
        weight: float,
        stage_of: Callable[[int], int],
        sent: SentModel | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.weight = weight
        self.stage_of = stage_of
        self.sent = sent or SentModel()
        self.importance: ArrayRecord | None = None  # of the stages before importance_stage
        self.importance_stage = 0
        self.anchor: ArrayRecord | None = None  # the global model at that stage's start
        self.once = SentOnce()  # importance and anchor go to each hospital once
        self.round_report: RoundReport | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """FedAvg's messages, with the weight, and the importance to whom lacks it."""
        config[WEIGHT_KEY] = self.weight
        config[STAGE_KEY] = self.importance_stage
        return self.once.attach(super().configure_train(server_round, arrays, config, grid))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Take the hospitals' estimates out of their replies, then FedAvg's aggregate."""
        replies = list(replies)
        extra = self.once.delivered(replies)
        estimates: list[tuple[ArrayRecord, float]] = []
        for msg in replies:
            if ESTIMATE_KEY in msg.content.array_records:
                estimates.append((msg.content.array_records[ESTIMATE_KEY], _tiles(msg)))
                extra += estimates[-1][0].count_bytes()
                del msg.content[ESTIMATE_KEY]  # FedAvg takes one ArrayRecord per reply
        stage = self.stage_of(server_round)
        if estimates and stage > self.importance_stage:
            self._accumulate(stage, estimates)
        self.round_report = RoundReport(extra_bytes=extra)
        return super().aggregate_train(server_round, replies)

    def _accumulate(self, stage: int, estimates: list[tuple[ArrayRecord, float]]) -> None:
        """Add the stage's averaged estimate to the importance; its anchor: the model sent."""
        total = sum(w for _, w in estimates)
        mean: dict[str, torch.Tensor] = {}
        for record, w in estimates:
            for name, value in record.to_torch_state_dict().items():
                mean[name] = mean.get(name, torch.zeros_like(value)) + value * (w / total)
        importance = normalised(mean)
        if self.importance is not None:
            before = self.importance.to_torch_state_dict()
            importance = {n: v + before[n] for n, v in importance.items()}
        self.importance, self.importance_stage = ArrayRecord(importance), stage
        self.anchor = self.sent()
        self._send()
        log(logging.INFO, "EWC: importance of stages < %d from %d hospitals", stage, len(estimates))

    def _send(self) -> None:
        if self.importance is not None and self.anchor is not None:
            self.once.set({IMPORTANCE_KEY: self.importance, ANCHOR_KEY: self.anchor})

    def state_dict(self) -> dict[str, Any]:
        """Return the importance, its stage and the anchor (for checkpoints)."""
        return {
            "importance": None
            if self.importance is None
            else self.importance.to_torch_state_dict(),
            "importance_stage": self.importance_stage,
            "anchor": None if self.anchor is None else self.anchor.to_torch_state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; the hospitals get both again (their state is gone)."""
        self.importance = None if state["importance"] is None else ArrayRecord(state["importance"])
        self.importance_stage = state["importance_stage"]
        self.anchor = None if state["anchor"] is None else ArrayRecord(state["anchor"])
        self._send()


def _tiles(msg: Message) -> float:
    metrics = next(iter(msg.content.metric_records.values()), None)
    return float(metrics.get("num-examples", 1)) if metrics is not None else 1.0  # type: ignore[arg-type]
