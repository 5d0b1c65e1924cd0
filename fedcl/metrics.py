"""Run-level metrics from per-round records (pure functions).

- Continual learning: ``R[i][j]`` = Dice on stage j's test data after stage i;
  ``ACC = mean_j R[T][j]``, ``BWT = mean_{j<T} (R[T][j] - R[j][j])``,
  ``forgetting = mean_{j<T} (max_{l<T} R[l][j] - R[T][j])`` (T = the last stage).
- Drift detection: precision and recall of the rejections a strategy reports
  (``round_report`` with ``hospitals`` and ``decisions``) against the hospitals the
  scenario actually drifted in that round.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from fedcl.config import RunConfig
from fedcl.scenarios import scenario_of

Matrix = Sequence[Sequence[float | None]]


def continual_metrics(matrix: Matrix) -> dict[str, float | None]:
    """ACC, BWT and forgetting of a stage x stage Dice matrix.

    With one stage, BWT and forgetting are undefined (None); missing entries (None)
    are skipped.
    """
    if not matrix:
        return {"acc": None, "bwt": None, "forgetting": None}
    last = len(matrix) - 1
    final = matrix[last]
    acc = _mean([final[j] for j in range(len(final))])
    bwt = _mean([_sub(final[j], matrix[j][j]) for j in range(last)])
    forgetting = _mean(
        [_sub(_max([matrix[i][j] for i in range(last)]), final[j]) for j in range(last)]
    )
    return {"acc": acc, "bwt": bwt, "forgetting": forgetting}


def detection(config: RunConfig, records: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Precision and recall of reported rejections against the truly drifted hospitals.

    A rejection is any decision other than ``"accepted"``. Precision is None when
    nothing was rejected, recall when nothing drifted; both None when the strategy
    reports no decisions at all.
    """
    tp = fp = fn = 0
    reported, scenario = False, scenario_of(config)
    for record in records:
        report = record.get("aggregation") or {}
        if "decisions" not in report or "hospitals" not in report:
            continue
        reported = True
        for hospital, decision in zip(report["hospitals"], report["decisions"], strict=True):
            if hospital is None:
                continue
            rejected = decision != "accepted"
            drifted = scenario.is_drifted(hospital, record["round"])
            tp += rejected and drifted
            fp += rejected and not drifted
            fn += drifted and not rejected
    if not reported:
        return {"precision": None, "recall": None}
    return {
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
    }


def dice_matrix(
    config: RunConfig, records: Sequence[dict[str, Any]], key: str = "dice_per_stage"
) -> list[list[float | None]]:
    """Return the rows of ``R``: per-stage Dice recorded at the end of each stage reached.

    ``key``: ``dice_per_stage`` (as run) or ``dice_per_stage_local_stats`` (each
    hospital's own re-estimated BatchNorm statistics; runs before 0.2 lack it: no rows).
    """
    by_round = {r["round"]: r for r in records}
    return [
        list(by_round[end][key])
        for end in scenario_of(config).stage_end_rounds()
        if end in by_round and by_round[end].get(key) is not None
    ]


LAST_ROUNDS = 3  # final_dice_last3: mean Dice over this many last rounds


def summarize(config: RunConfig, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Build a run's ``summary.json`` from its config and its round records."""
    last = records[-1] if records else {}
    matrix = dice_matrix(config, records)
    local = dice_matrix(config, records, "dice_per_stage_local_stats")
    if not any(v is not None for row in local for v in row):
        local = []  # a model without running statistics, or a run before 0.2
    return {
        "final_dice": last.get("dice"),
        # the last round's Dice moves by up to 0.1 from round to round (one local epoch
        # of Adam per round); the mean of the last few is the steadier figure
        "final_dice_last3": _mean([r.get("dice") for r in records[1:][-LAST_ROUNDS:]]),
        "dice_per_hospital": last.get("dice_per_hospital"),
        "dice_matrix": matrix,
        **continual_metrics(matrix),
        # the same figures with each hospital's own BatchNorm statistics (fedcl.evaluation):
        # what the weights know, apart from what the statistics describe; None without
        "final_dice_local_stats": last.get("dice_local_stats"),
        "dice_matrix_local_stats": local or None,
        **{f"{k}_local_stats": v for k, v in continual_metrics(local).items()},
        "detection": detection(config, records),
        "rounds": last.get("round", 0),
        "wall_seconds": round(sum(r.get("wall_seconds", 0.0) for r in records), 3),
        "strategy": config.strategy,
        "scenario": config.scenario,
        "seed": config.seed,
    }


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b
