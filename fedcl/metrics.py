"""Run-level metrics from per-round records (pure functions).

- Continual learning: ``R[i][j]`` = Dice on stage j's test data after stage i;
  ``ACC = mean_j R[T][j]``, ``BWT = mean_{j<T} (R[T][j] - R[j][j])``,
  ``forgetting = mean_{j<T} (max_{l<T} R[l][j] - R[T][j])``, ``newest = R[T][T]``
  (T = the last stage).
- Readings (:data:`READINGS`): every Dice figure as run, with the hospitals' own
  BatchNorm statistics (re-estimated on their training tiles: the headline) and with
  oracle statistics (re-estimated on the test tiles: a diagnostic); see
  :mod:`fedcl.evaluation`.
- Robust to one round: a figure read at a point of the run (a stage end, the end) is
  the mean of the last :data:`READ_ROUNDS` rounds there (within the stage); Dice moves
  by up to 0.1 from one round to the next (one local epoch of Adam per round).
- Drift detection: precision and recall of the rejections a strategy reports
  (``round_report`` with ``hospitals`` and ``decisions``) against the hospitals the
  scenario actually drifted in that round.
- Stage-boundary detection: precision and recall of the rounds a strategy reports a
  shift starting in (``shift_started``) against the scenario's stage boundaries, a
  boundary found when a shift starts within :data:`BOUNDARY_SLACK` rounds of it.
"""

from __future__ import annotations

import statistics
from collections.abc import Collection, Sequence
from typing import Any

from fedcl.config import RunConfig
from fedcl.scenarios import scenario_of

Matrix = Sequence[Sequence[float | None]]


def continual_metrics(matrix: Matrix) -> dict[str, float | None]:
    """ACC, BWT, forgetting and the newest stage's Dice of a stage x stage Dice matrix.

    ``newest`` is ``R[T][T]``, the last stage's Dice at the end: how well the newest
    data was learned (what holding on to the old stages may cost). With one stage, BWT
    and forgetting are undefined (None); missing entries (None) are skipped.
    """
    if not matrix:
        return {"acc": None, "bwt": None, "forgetting": None, "newest": None}
    last = len(matrix) - 1
    final = matrix[last]
    acc = _mean([final[j] for j in range(len(final))])
    bwt = _mean([_sub(final[j], matrix[j][j]) for j in range(last)])
    forgetting = _mean(
        [_sub(_max([matrix[i][j] for i in range(last)]), final[j]) for j in range(last)]
    )
    newest = final[last] if last < len(final) else None
    return {"acc": acc, "bwt": bwt, "forgetting": forgetting, "newest": newest}


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


BOUNDARY_SLACK = 1  # a shift found this many rounds from a stage's first round finds it


def boundaries(config: RunConfig, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Precision and recall of the shifts a strategy reports against the stage boundaries.

    A boundary is the first round of every stage after the first. A reported shift
    (``shift_started`` in a round's report) is right when it lies within
    :data:`BOUNDARY_SLACK` rounds of a boundary; a boundary is found when some shift
    does. Precision is None when no shift was reported, recall when the scenario has
    no boundary; both None when the strategy reports no shift detection at all.
    ``found``: the rounds shifts were reported in.
    """
    found, reported = [], False
    for record in records:
        report = record.get("aggregation") or {}
        if "shift_started" in report:
            reported = True
            if report["shift_started"]:
                found.append(record["round"])
    if not reported:
        return {"precision": None, "recall": None, "found": None}
    truth = scenario_of(config).stage_boundaries()

    def near(a: int, b: int) -> bool:
        return abs(a - b) <= BOUNDARY_SLACK

    right = [f for f in found if any(near(f, b) for b in truth)]
    hit = [b for b in truth if any(near(f, b) for f in found)]
    return {
        "precision": len(right) / len(found) if found else None,
        "recall": len(hit) / len(truth) if truth else None,
        "found": found,
    }


def dice_matrix(
    config: RunConfig, records: Sequence[dict[str, Any]], key: str = "dice_per_stage"
) -> list[list[float | None]]:
    """Return the rows of ``R``: per-stage Dice read at the end of each stage reached.

    Row i is the mean over the last :data:`READ_ROUNDS` rounds of stage i of each
    stage's Dice (an entry only one of those rounds scored, a future stage's, is that
    round's). ``key``: ``dice_per_stage`` or the same with a reading's suffix
    (:data:`READINGS`); a run without that reading has no rows.
    """
    by_round = {r["round"]: r for r in records}
    scenario = scenario_of(config)
    rows = []
    for end in scenario.stage_end_rounds():
        if end not in by_round or by_round[end].get(key) is None:
            continue
        rounds = [
            by_round[r][key]
            for r in read_rounds(config, end)
            if r in by_round and by_round[r].get(key) is not None
        ]
        rows.append([_mean([row[j] for row in rounds]) for j in range(len(by_round[end][key]))])
    return rows


READ_ROUNDS = 2  # a figure read at a point of the run: the mean of this many last rounds
LAST_ROUNDS = 3  # final_dice_last3: mean Dice over this many last rounds

# Readings of every Dice figure, as key suffixes: as run, own statistics, oracle statistics.
AS_RUN, OWN, ORACLE = "", "_own_stats", "_oracle_stats"
READINGS = (AS_RUN, OWN, ORACLE)
READING_NAMES = {
    AS_RUN: "as run",
    OWN: "own statistics",
    ORACLE: "oracle statistics (diagnostic)",
}


def read_rounds(config: RunConfig, end: int) -> range:
    """Return the rounds a figure read at round ``end`` averages (the last of its stage)."""
    scenario = scenario_of(config)
    stage = scenario.stage_of(end)
    first = 1 if not scenario.staged else stage * config.rounds_per_stage + 1
    return range(max(first, end - READ_ROUNDS + 1), end + 1)


def summary_rounds(config: RunConfig) -> set[int]:
    """Return the rounds whose figures ``summary.json`` reads.

    The :func:`read_rounds` of every stage end (the stage x stage matrix, the final
    Dice) and the last :data:`LAST_ROUNDS` rounds (``final_dice_last3``).
    """
    ends = scenario_of(config).stage_end_rounds()
    read = {r for end in ends for r in read_rounds(config, end)}
    return read | set(range(max(1, config.rounds - LAST_ROUNDS + 1), config.rounds + 1))


def summarize(config: RunConfig, records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Build a run's ``summary.json`` from its config and its round records.

    Every Dice figure in each reading (suffix ``""``, ``_own_stats``,
    ``_oracle_stats``); a reading a model cannot have (no running statistics) is None.
    """
    last = records[-1] if records else {}
    by_round = {r["round"]: r for r in records}
    end = last.get("round", 0)
    summary: dict[str, Any] = {}
    for reading in READINGS:
        matrix = dice_matrix(config, records, f"dice_per_stage{reading}")
        if not any(v is not None for row in matrix for v in row):
            matrix = []  # no such reading: a model without running statistics
        final = [
            by_round[r].get(f"dice{reading}") for r in read_rounds(config, end) if r in by_round
        ]
        summary |= {
            f"final_dice{reading}": _mean(final),
            f"dice_per_hospital{reading}": last.get(f"dice_per_hospital{reading}"),
            f"dice_matrix{reading}": matrix if matrix or not reading else None,
            **{f"{k}{reading}": v for k, v in continual_metrics(matrix).items()},
        }
    return summary | {
        "final_dice_last3": _mean([r.get("dice") for r in records[1:][-LAST_ROUNDS:]]),
        "read_rounds": READ_ROUNDS,
        "detection": detection(config, records),
        "boundaries": boundaries(config, records),
        "extra_bytes_per_round": _mean(
            [(r.get("aggregation") or {}).get("extra_bytes", 0) for r in records[1:]]
        ),
        "rounds": end,
        "wall_seconds": round(sum(r.get("wall_seconds", 0.0) for r in records), 3),
        "hospital_seconds": hospital_seconds(records),
        "strategy": config.strategy,
        "scenario": config.scenario,
        "seed": config.seed,
    }


# Reply metrics of a hospital's train handler: the seconds it spent per phase
# (fedcl.hospital writes them, the recorder collects them as hospital_seconds), and
# the seconds its messages took: from the server to the ClientApp process, from that
# process's start to the handler (a deployment starts one per message; 0 where it lived
# on), and the reply's way back (measured by the server).
SECONDS_PREFIX = "seconds-"
HOSPITAL_PHASES = ("receive", "evaluation", "training")
MESSAGE_PHASES = ("delivery", "start", "reply")


def without_timing(value: Any, also: Collection[str] = ()) -> Any:
    """Return a record, summary or any JSON value with every timing key removed.

    Timings (``wall_seconds``, ``hospital_seconds``, ``seconds-*``) differ between two
    runs of one config; everything else a run writes must not. ``also``: more keys to
    drop at any depth.
    """
    if isinstance(value, dict):
        return {
            k: without_timing(v, also)
            for k, v in value.items()
            if "seconds" not in k and k not in also
        }
    return [without_timing(v, also) for v in value] if isinstance(value, list) else value


def hospital_seconds(records: Sequence[dict[str, Any]]) -> dict[str, float | None] | None:
    """Return the hospitals' mean seconds per phase of a round, and evaluation's share.

    The share is of the handler's time (:data:`HOSPITAL_PHASES`), messages apart.

    From round 2 on (round 1's handler also starts the hospital and generates its
    tiles); None when the records have no timings (a plug-in's strategy may not
    aggregate the replies' metrics, or a run of one round).
    """
    timed = [r["hospital_seconds"] for r in records[2:] if r.get("hospital_seconds")]
    if not timed:
        return None
    phases = {k: statistics.fmean(t.get(k, 0.0) for t in timed) for k in timed[0]}
    total = sum(v for k, v in phases.items() if k in HOSPITAL_PHASES)  # the handler's
    share = phases.get("evaluation", 0.0) / total if total > 0 else None
    return {k: round(v, 4) for k, v in phases.items()} | {"evaluation_share": share}


def round_parts(records: Sequence[dict[str, Any]]) -> dict[str, float] | None:
    """Split the rounds from round 2 on into their parts; medians in seconds.

    ``wall``: the round as the server saw it; a hospital's message parts
    (:data:`MESSAGE_PHASES`) and handler phases (:data:`HOSPITAL_PHASES`), each the
    hospitals' mean; ``rest``: the round less those (the server's own work, and the wait
    for hospitals slower than the mean). None without the message timings (runs before
    they were recorded).
    """
    parts = MESSAGE_PHASES[:2] + HOSPITAL_PHASES + MESSAGE_PHASES[2:]
    timed = [r for r in records[2:] if all(p in (r.get("hospital_seconds") or {}) for p in parts)]
    if not timed:
        return None
    rows = [
        {"wall": r["wall_seconds"], **{p: r["hospital_seconds"][p] for p in parts}} for r in timed
    ]
    for row in rows:
        row["rest"] = row["wall"] - sum(row[p] for p in parts)
    return {k: round(statistics.median(row[k] for row in rows), 3) for k in rows[0]}


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else None


def _max(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b
