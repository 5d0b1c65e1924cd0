"""Evaluation of a model at one hospital, and a round's figures from every hospital's.

A hospital evaluates the model it holds on its own held-out tiles, one stage at a time,
and sends back figures only (:class:`HospitalFigures`: Dice, loss and tile count per
stage). The server combines every hospital's figures into the round's record
(:func:`round_evaluation`). No Flower here: the hospital's ClientApp and the server's
shortcut for synthetic simulation (``evaluation = "server"``) call the same functions,
so both give the same figures.

Each stage is scored in three readings (:data:`fedcl.metrics.READINGS`):

- **as run** (``dice``): the model as it is, with the BatchNorm statistics it holds;
- **own statistics** (``dice_own_stats``): a copy whose BatchNorm statistics are
  re-estimated on the tiles the hospital trained on with this model, the training tiles
  of the model's round (labels unused; AdaBN, Li et al. 2016). This is what a hospital
  can do: it reads no test tile and no tile of a stage that is gone. The headline.
- **oracle statistics** (``dice_oracle_stats``): a copy whose statistics are
  re-estimated on the tested stage's own test tiles. A diagnostic, not a result: it
  reads test tiles, and for an old stage tiles the scenario says are gone, and per-stage
  statistics tell the model which stage it is looking at (a task-identity oracle).

Both re-estimated readings are NaN for a model without running statistics (instance or
group normalisation).
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
from fedcl.config.sections import evaluation_period
from fedcl.data.dataset import TileDataset
from fedcl.metrics import AS_RUN, ORACLE, OWN, READINGS, summary_rounds
from fedcl.normalization import has_running_stats
from fedcl.scenarios import scenario_of
from fedcl.training import evaluate, recompute_batchnorm


@dataclass(frozen=True)
class HospitalFigures:
    """One hospital's evaluation of one model: per evaluated stage, in ``stages`` order."""

    stages: tuple[int, ...]
    dice: tuple[float, ...]  # NaN where no test tile of the stage holds a foreground class
    dice_own_stats: tuple[float, ...]  # NaN for a model without running statistics
    dice_oracle_stats: tuple[float, ...]  # idem
    loss: tuple[float, ...]
    tiles: tuple[int, ...]

    def to_record(self) -> dict[str, list[int] | list[float]]:
        """Return the figures as a Flower ``ConfigRecord``-compatible mapping."""
        return {
            "stages": list(self.stages),
            "dice": list(self.dice),
            "dice-own-stats": list(self.dice_own_stats),
            "dice-oracle-stats": list(self.dice_oracle_stats),
            "loss": list(self.loss),
            "tiles": list(self.tiles),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> HospitalFigures:
        """Inverse of :meth:`to_record`."""
        return cls(
            stages=tuple(int(s) for s in record["stages"]),
            dice=tuple(float(d) for d in record["dice"]),
            dice_own_stats=tuple(float(d) for d in record["dice-own-stats"]),
            dice_oracle_stats=tuple(float(d) for d in record["dice-oracle-stats"]),
            loss=tuple(float(v) for v in record["loss"]),
            tiles=tuple(int(n) for n in record["tiles"]),
        )


def evaluated_stages(config: RunConfig, server_round: int) -> range:
    """Stages whose test tiles the model after ``server_round`` is scored on.

    Every stage seen so far; every stage at the end of a stage (a row of the stage x
    stage matrix, whose later columns show what an old model knows of the future). With
    ``evaluate-rounds = "read"``, none in a round no summary figure reads
    (:func:`fedcl.metrics.summary_rounds`); with ``"every-K"``, none in a round that is
    neither read nor a multiple of K.
    """
    period = evaluation_period(config.evaluate_rounds)
    skipped = period == 0 or server_round % period != 0
    if skipped and server_round not in summary_rounds(config):
        return range(0)
    scenario = scenario_of(config)
    if server_round in scenario.stage_end_rounds():
        return range(scenario.num_stages())
    return range(scenario.stage_of(server_round) + 1)


def own_tiles_round(server_round: int) -> int:
    """Return the round whose training tiles the model after ``server_round`` adapts to.

    The round's own (the tiles it was trained on); for the initial model (round 0),
    round 1's: the tiles the hospital holds when that model arrives.
    """
    return max(server_round, 1)


def evaluate_hospital(
    model: nn.Module,
    test_sets: Mapping[int, TileDataset],
    own: TileDataset,
    *,
    batch_size: int,
) -> HospitalFigures:
    """Score ``model`` on a hospital's test tiles of each stage in ``test_sets``.

    Parameters
    ----------
    model : nn.Module
        Left as it came (statistics are re-estimated on copies).
    test_sets : mapping of int to TileDataset
        The hospital's held-out tiles, by 0-based stage.
    own : TileDataset
        The hospital's training tiles of the model's round (:func:`own_tiles_round`):
        the only tiles the *own statistics* reading adapts to (labels unused).
    batch_size : int
        The batch of the statistics' re-estimation, as in training.
    """
    stages, loss, tiles = [], [], []
    dice: dict[str, list[float]] = {reading: [] for reading in READINGS}
    adapted = None
    if has_running_stats(model) and test_sets:
        adapted = copy.deepcopy(model)
        recompute_batchnorm(adapted, own, batch_size)
    for stage, data in sorted(test_sets.items()):
        result = evaluate(model, data)
        stages.append(stage)
        loss.append(result.loss)
        tiles.append(len(data))
        dice[AS_RUN].append(result.dice)
        if adapted is None:
            dice[OWN].append(math.nan)
            dice[ORACLE].append(math.nan)
            continue
        dice[OWN].append(evaluate(adapted, data, with_loss=False).dice)
        oracle = copy.deepcopy(model)
        recompute_batchnorm(oracle, data, batch_size)
        dice[ORACLE].append(evaluate(oracle, data, with_loss=False).dice)
    return HospitalFigures(
        stages=tuple(stages),
        dice=tuple(dice[AS_RUN]),
        dice_own_stats=tuple(dice[OWN]),
        dice_oracle_stats=tuple(dice[ORACLE]),
        loss=tuple(loss),
        tiles=tuple(tiles),
    )


def round_evaluation(
    config: RunConfig, server_round: int, figures: Mapping[int, HospitalFigures]
) -> dict[str, Any]:
    """Combine the hospitals' figures (by hospital id) into a round record's evaluation.

    ``dice_per_hospital``: each hospital's mean over the stages seen so far (None for a
    hospital that sent nothing); ``dice``: their mean; ``dice_per_stage``: the mean
    over hospitals per stage (None where not evaluated); each also in the other readings
    (``dice_own_stats``, ``dice_per_stage_oracle_stats``, ...).
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
            _mean(
                getattr(figures[h], pick)[figures[h].stages.index(s)]
                for s in seen
                if s in figures[h].stages
            )
            if h in figures
            else None
            for h in range(config.clients)
        ]

    evaluation: dict[str, Any] = {"stage": current}
    for reading in READINGS:
        per = per_hospital(f"dice{reading}")
        evaluation[f"dice{reading}"] = _mean(per)
        evaluation[f"dice_per_hospital{reading}"] = per
        evaluation[f"dice_per_stage{reading}"] = per_stage(f"dice{reading}")
    missing = [h for h in range(config.clients) if h not in figures]
    evaluation |= {
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
