"""Evaluation of a model at one hospital, and a round's figures from every hospital's.

A hospital evaluates the model it holds on its own held-out tiles, one stage at a time,
and sends back figures only (:class:`HospitalFigures`: Dice, loss and tile count per
stage). The server combines every hospital's figures into the round's record
(:func:`round_evaluation`). No Flower here: the hospital's ClientApp and the server's
shortcut for synthetic simulation (``evaluation = "server"``) call the same functions,
so both give the same figures.

Each stage is scored twice:

- **as run**: the model as it is, with the BatchNorm statistics it holds;
- **local statistics**: a copy whose BatchNorm statistics are re-estimated on the
  hospital's own images of that stage (labels unused; AdaBN, Li et al. 2016), so that
  what the weights know is measured apart from what the statistics describe. NaN for a
  model without running statistics (instance normalisation).
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from fedcl.config import RunConfig
from fedcl.data.dataset import TileDataset
from fedcl.normalization import has_running_stats
from fedcl.scenarios import scenario_of
from fedcl.training import evaluate, recompute_batchnorm


@dataclass(frozen=True)
class HospitalFigures:
    """One hospital's evaluation of one model: per evaluated stage, in ``stages`` order."""

    stages: tuple[int, ...]
    dice: tuple[float, ...]  # NaN where no test tile of the stage holds a foreground class
    dice_local_stats: tuple[float, ...]  # NaN for a model without running statistics
    loss: tuple[float, ...]
    tiles: tuple[int, ...]

    def to_record(self) -> dict[str, list[int] | list[float]]:
        """Return the figures as a Flower ``ConfigRecord``-compatible mapping."""
        return {
            "stages": list(self.stages),
            "dice": list(self.dice),
            "dice-local-stats": list(self.dice_local_stats),
            "loss": list(self.loss),
            "tiles": list(self.tiles),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> HospitalFigures:
        """Inverse of :meth:`to_record`."""
        return cls(
            stages=tuple(int(s) for s in record["stages"]),
            dice=tuple(float(d) for d in record["dice"]),
            dice_local_stats=tuple(float(d) for d in record["dice-local-stats"]),
            loss=tuple(float(v) for v in record["loss"]),
            tiles=tuple(int(n) for n in record["tiles"]),
        )


def evaluated_stages(config: RunConfig, server_round: int) -> range:
    """Stages whose test tiles the model after ``server_round`` is scored on.

    Every stage seen so far; every stage at the end of a stage (a row of the stage x
    stage matrix, whose later columns show what an old model knows of the future).
    """
    scenario = scenario_of(config)
    if server_round in scenario.stage_end_rounds():
        return range(scenario.num_stages())
    return range(scenario.stage_of(server_round) + 1)


def evaluate_hospital(
    model: nn.Module, test_sets: Mapping[int, TileDataset], *, batch_size: int
) -> HospitalFigures:
    """Score ``model`` on a hospital's test tiles of each stage in ``test_sets``.

    ``model`` is left as it came (local statistics are estimated on a copy);
    ``batch_size`` is the batch of the statistics' re-estimation, as in training.
    """
    local = has_running_stats(model)
    stages, dice, dice_local, loss, tiles = [], [], [], [], []
    for stage, data in sorted(test_sets.items()):
        result = evaluate(model, data)
        stages.append(stage)
        dice.append(result.dice)
        loss.append(result.loss)
        tiles.append(len(data))
        if local:
            adapted = copy.deepcopy(model)
            recompute_batchnorm(adapted, data, batch_size)
            dice_local.append(evaluate(adapted, data).dice)
        else:
            dice_local.append(math.nan)
    return HospitalFigures(tuple(stages), tuple(dice), tuple(dice_local), tuple(loss), tuple(tiles))


def round_evaluation(
    config: RunConfig, server_round: int, figures: Mapping[int, HospitalFigures]
) -> dict[str, Any]:
    """Combine the hospitals' figures (by hospital id) into a round record's evaluation.

    ``dice_per_hospital``: each hospital's mean over the stages seen so far (None for a
    hospital that sent nothing); ``dice``: their mean; ``dice_per_stage``: the mean
    over hospitals per stage (None where not evaluated), and the same ``*_local_stats``.
    """
    scenario = scenario_of(config)
    current = scenario.stage_of(server_round)
    seen = range(current + 1)
    stages = scenario.num_stages()

    def per_stage(pick: str) -> list[float | None]:
        return [
            _mean(getattr(f, pick)[f.stages.index(s)] for f in figures.values() if s in f.stages)
            for s in range(stages)
        ]

    def per_hospital(pick: str) -> list[float | None]:
        return [
            _mean(getattr(figures[h], pick)[figures[h].stages.index(s)] for s in seen)
            if h in figures
            else None
            for h in range(config.clients)
        ]

    dice_per_hospital = per_hospital("dice")
    local_per_hospital = per_hospital("dice_local_stats")
    missing = [h for h in range(config.clients) if h not in figures]
    evaluation: dict[str, Any] = {
        "stage": current,
        "dice": _mean(dice_per_hospital),
        "dice_per_hospital": dice_per_hospital,
        "dice_per_stage": per_stage("dice"),
        "dice_local_stats": _mean(local_per_hospital),
        "dice_per_hospital_local_stats": local_per_hospital,
        "dice_per_stage_local_stats": per_stage("dice_local_stats"),
        # stage-major, as the sum was always taken (bit-identical records)
        "test_loss": _mean(
            f.loss[f.stages.index(s)] for s in seen for f in figures.values() if s in f.stages
        ),
    }
    if missing:
        evaluation["not_evaluated"] = missing
    return evaluation


def _mean(values: Any) -> float | None:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(present) if present else None
