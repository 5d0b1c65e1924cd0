"""``fedcl compare``: several strategies on one scenario, seed for seed, in one table.

Every strategy x seed pair runs as its own ``fedcl run`` into ``OUT/<strategy>-s<seed>``
with the same options otherwise; then :func:`write_comparison` reads the runs'
``summary.json`` files back and writes ``results.md``, ``results.csv`` (mean and std
over seeds) and ``comparison.png``. ``fedcl report OUT`` rebuilds those from the run
directories alone.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fedcl.config import RunConfig
from fedcl.plots import plot_comparison
from fedcl.recorder import read_metrics

# (summary path, column name) of every figure in the table
COLUMNS = (
    (("final_dice",), "final_dice"),
    (("acc",), "acc"),
    (("bwt",), "bwt"),
    (("forgetting",), "forgetting"),
    (("detection", "precision"), "precision"),
    (("detection", "recall"), "recall"),
    (("wall_seconds",), "wall_seconds"),
)


def run_name(strategy: str, seed: int) -> str:
    """Directory name of one run: the strategy (made path-safe) and the seed."""
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', strategy)}-s{seed}"


def run_all(
    base: RunConfig,
    strategies: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    run: Callable[[RunConfig], None],
) -> list[Path]:
    """Run every strategy x seed pair with ``run(config)``; return the run directories."""
    dirs = []
    for strategy in strategies:
        for seed in seeds:
            run_dir = out / run_name(strategy, seed)
            run(base.replace(strategy=strategy, seed=seed, out=str(run_dir)))
            dirs.append(run_dir)
    return dirs


def _get(summary: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = summary
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    std = statistics.stdev(present) if len(present) > 1 else None
    return statistics.fmean(present), std


def collect(out: Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """Read the summaries of every run directory under ``out`` (sorted by directory)."""
    dirs = sorted(p.parent for p in out.glob("*/summary.json"))
    return [json.loads((d / "summary.json").read_text()) for d in dirs], dirs


def aggregate(summaries: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per strategy (in first-seen order): seeds, and (mean, std) of every column."""
    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for summary in summaries:
        by_strategy.setdefault(summary["strategy"], []).append(summary)
    table: dict[str, dict[str, Any]] = {}
    for strategy, runs in by_strategy.items():
        row: dict[str, Any] = {"seeds": sorted(r["seed"] for r in runs)}
        for path, column in COLUMNS:
            row[column] = _mean_std([_get(r, path) for r in runs])
        table[strategy] = row
    return table


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def write_comparison(out: Path) -> dict[str, dict[str, Any]]:
    """Write ``results.md``, ``results.csv`` and ``comparison.png`` for the runs in ``out``."""
    summaries, dirs = collect(out)
    if not summaries:
        raise FileNotFoundError(f"no run directories with a summary.json under {out}")
    table = aggregate(summaries)
    scenario = summaries[0]["scenario"]
    columns = [c for _, c in COLUMNS]
    header = "| strategy | seeds | " + " | ".join(columns) + " |"
    lines = [
        f"# fedcl compare: scenario {scenario}",
        "",
        "Mean ± std over seeds (n/a: not defined for this scenario or strategy).",
        "",
        header,
        "|" + "---|" * (len(columns) + 2),
    ]
    for strategy, row in table.items():
        cells = " | ".join(_cell(*row[c]) for c in columns)
        seeds = ",".join(str(s) for s in row["seeds"])
        lines.append(f"| {strategy} | {seeds} | {cells} |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["strategy", "seeds", *[f"{c}_{s}" for c in columns for s in ("mean", "std")]]
        )
        for strategy, row in table.items():
            values = [v for c in columns for v in row[c]]
            writer.writerow(
                [
                    strategy,
                    " ".join(str(s) for s in row["seeds"]),
                    *["" if v is None else repr(v) for v in values],
                ]
            )
    plot_comparison(
        _curves(summaries, dirs), table, out / "comparison.png", title=f"scenario {scenario}"
    )
    return table


def _curves(
    summaries: Sequence[dict[str, Any]], dirs: Sequence[Path]
) -> dict[str, list[tuple[int, float, float]]]:
    """Per strategy: (round, mean Dice, std) over its seeds."""
    per_round: dict[str, dict[int, list[float]]] = {}
    for summary, run_dir in zip(summaries, dirs, strict=True):
        rounds = per_round.setdefault(summary["strategy"], {})
        for record in read_metrics(run_dir):
            if record.get("dice") is not None:
                rounds.setdefault(record["round"], []).append(record["dice"])
    return {
        strategy: [
            (r, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0)
            for r, v in sorted(rounds.items())
        ]
        for strategy, rounds in per_round.items()
    }
