"""``fedcl compare``: strategies (and variants) on scenarios, seed for seed, in tables.

Every entry x seed pair runs as its own ``fedcl run`` into ``OUT/<entry>-s<seed>``
(``OUT/<scenario>/<entry>-s<seed>`` with several scenarios) with the same options
otherwise. An entry is a strategy name, optionally with settings of its own:
``dbc+dbc-consolidation=off+dbc-steps=20`` is DBC with those two keys changed, a row
of its own (ablations). A run whose directory already holds a summary of the same
config is kept, and one with a checkpoint of the same config is resumed, so an
interrupted comparison continues where it stopped when run again.
:func:`write_comparison` reads the runs' ``summary.json`` files back and writes
``results.md``, ``results.csv`` (mean and std over seeds) and ``comparison.png``;
``fedcl report OUT`` rebuilds those from the run directories alone.
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
from fedcl.configure import from_run_dir
from fedcl.entries import Entry
from fedcl.errors import FedclError
from fedcl.metrics import READINGS
from fedcl.plots import plot_comparison
from fedcl.plugins import SCENARIOS
from fedcl.recorder import read_metrics
from fedcl.scenarios import scenario_class, scenario_of

# (summary path, column name) of every figure in the table: each Dice figure in every
# reading (fedcl.metrics.READINGS: as run, own statistics, oracle statistics)
COLUMNS = (
    *((("final_dice" + r,), "final_dice" + r) for r in READINGS),
    (("final_dice_last3",), "dice_last3"),
    *(((f + r,), f + r) for r in READINGS for f in ("acc", "bwt", "forgetting")),
    (("detection", "precision"), "precision"),
    (("detection", "recall"), "recall"),
    (("wall_seconds",), "wall_seconds"),
)


def run_name(label: str, seed: int) -> str:
    """Directory name of one run: the entry's label (made path-safe) and the seed."""
    return f"{path_safe(label)}-s{seed}"


def label_of(run_dir: Path) -> str:
    """Return the entry label a run directory was named after (see :func:`run_name`)."""
    return run_dir.name.rsplit("-s", 1)[0]


def _same_config(run_dir: Path, config: RunConfig) -> bool:
    try:
        return from_run_dir(run_dir) == config
    except FedclError:
        return False


def _finished(run_dir: Path, config: RunConfig) -> bool:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(summary.get("rounds") == config.rounds)


def run_all(
    base: RunConfig,
    entries: Sequence[Entry],
    seeds: Sequence[int],
    out: Path,
    run: Callable[[RunConfig, bool], None],
) -> list[Path]:
    """Run every entry x seed pair with ``run(config, resume)``; return the run directories.

    A pair whose directory holds a ``summary.json`` of the same config is skipped; one
    with only a checkpoint of the same config is resumed (``resume=True``).
    """
    out.mkdir(parents=True, exist_ok=True)
    listed = [e.label for e in entries]
    (out / ORDER_FILE).write_text(
        json.dumps(list(dict.fromkeys(listed + _order(out))), indent=1) + "\n"
    )
    dirs = []
    for entry in entries:
        for seed in seeds:
            run_dir = out / run_name(entry.label, seed)
            config = entry.config(base).replace(seed=seed, out=str(run_dir))
            done = _same_config(run_dir, config)
            if done and _finished(run_dir, config):
                print(f"fedcl compare: {run_dir} is complete, kept")
            else:
                run(config, done and (run_dir / "checkpoint.pt").exists())
            dirs.append(run_dir)
    return dirs


def run_scenarios(
    base: RunConfig,
    scenarios: Sequence[str],
    entries: Sequence[Entry],
    seeds: Sequence[int],
    out: Path,
    run: Callable[[RunConfig, bool], None],
) -> list[Path]:
    """:func:`run_all` per scenario into ``OUT/<scenario>`` and a table for each.

    Returns the comparison directories (one per scenario). Without ``scenarios`` the
    base config's scenario runs into ``out`` itself. ``OUT/results.md`` has every
    scenario directory in ``out``, also those an earlier command wrote (so commands
    naming one scenario each can fill one comparison).
    """
    for name in scenarios:
        SCENARIOS.check(name)
    if scenarios:
        configs = [(base.replace(scenario=name), out / path_safe(name)) for name in scenarios]
    else:
        configs = [(base, out)]
    for config, _ in configs:
        for entry in entries:
            entry.config(config)  # every entry valid in every scenario, before any run
    for config, directory in configs:
        run_all(config, entries, seeds, directory, run)
        write_comparison(directory)
    if scenarios:
        write_overview(out)
    return [directory for _, directory in configs]


def comparison_dirs(out: Path) -> list[Path]:
    """Return the scenario sub-directories of a several-scenario comparison."""
    held = sorted(d for d in out.iterdir() if any(d.glob("*/summary.json"))) if out.is_dir() else []
    builtin = [out / name for name in SCENARIOS.builtin]
    return [d for d in builtin if d in held] + [d for d in held if d not in builtin]


def headline(directory: Path) -> tuple[str, ...]:
    """Return the headline figures of a scenario's comparison: its scenario's own choice."""
    summaries = sorted(directory.glob("*/summary.json"))
    name = json.loads(summaries[0].read_text())["scenario"] if summaries else "iid"
    return scenario_class(name).headline


def path_safe(name: str) -> str:
    """Return ``name`` usable as a directory name (other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", name)


def write_overview(out: Path) -> None:
    """``OUT/results.md``: one headline table (entry x scenario), then every scenario's.

    Aggregates each scenario's run summaries (:func:`comparison_table`) without
    rewriting its files; :func:`write_comparison` writes those (here only where a
    stopped command left finished runs without them).
    """
    dirs = comparison_dirs(out)
    for d in dirs:
        if not (d / "results.md").exists():  # its command was stopped before its table
            write_comparison(d)
    tables = {d.name: comparison_table(d) for d in dirs}
    labels = list(dict.fromkeys(label for table in tables.values() for label in table))
    columns = [(d.name, c) for d in dirs for c in headline(d)]
    lines = [
        "# fedcl compare",
        "",
        "Mean ± std over seeds; the scenario tables below have every figure.",
        "",
        "| strategy | " + " | ".join(f"{name}: {c}" for name, c in columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for label in labels:
        cells = [
            _cell(*tables[name][label][c]) if label in tables[name] else "-" for name, c in columns
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    parts = [(d / "results.md").read_text().replace("# fedcl compare:", "##") for d in dirs]
    (out / "results.md").write_text("\n".join(lines) + "\n\n" + "\n".join(parts))


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


ORDER_FILE = "entries.json"  # a comparison's entry labels in the order its command named them


def _order(out: Path) -> list[str]:
    try:
        return [str(label) for label in json.loads((out / ORDER_FILE).read_text())]
    except (OSError, ValueError, TypeError):
        return []


def collect(out: Path) -> tuple[list[dict[str, Any]], list[Path]]:
    """Read the summaries of every run directory under ``out``.

    In the order the comparison's command named its entries (``entries.json``), then
    any other run directory, each by name.
    """
    rank = {label: i for i, label in enumerate(_order(out))}
    dirs = sorted(
        (p.parent for p in out.glob("*/summary.json")),
        key=lambda d: (rank.get(label_of(d), len(rank)), d.name),
    )
    return [json.loads((d / "summary.json").read_text()) for d in dirs], dirs


def workload(out: Path) -> str:
    """One line saying what every run of a comparison did (from its first config.toml)."""
    configs = sorted(out.glob("*/config.toml"))
    if not configs:
        return ""
    config = from_run_dir(configs[0].parent)
    scenario = scenario_of(config)
    shift = f", stage shift {scenario.stage_shift}" if scenario.stage_shift else ""
    stages = (
        f" ({config.stages} stages of {config.rounds_per_stage}{shift})" if scenario.staged else ""
    )
    return (
        f"Workload: {config.clients} hospitals, {config.rounds} rounds{stages} of "
        f"{config.local_epochs} local epoch(s), {config.train_tiles} training and "
        f"{config.test_tiles} test tiles of {config.image_size} px per hospital, model "
        f"{config.model}, data {config.data}, evaluation at the {config.evaluation}."
    )


def aggregate(
    summaries: Sequence[dict[str, Any]], labels: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Per entry label (in first-seen order): seeds, and (mean, std) of every column."""
    by_strategy: dict[str, list[dict[str, Any]]] = {}
    for summary, label in zip(summaries, labels, strict=True):
        by_strategy.setdefault(label, []).append(summary)
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


def comparison_table(out: Path) -> dict[str, dict[str, Any]]:
    """Per entry label: seeds and (mean, std) of every column, for the runs in ``out``."""
    summaries, dirs = collect(out)
    return aggregate(summaries, [label_of(d) for d in dirs])


def write_comparison(out: Path) -> dict[str, dict[str, Any]]:
    """Write ``results.md``, ``results.csv`` and ``comparison.png`` for the runs in ``out``."""
    summaries, dirs = collect(out)
    if not summaries:
        raise FileNotFoundError(f"no run directories with a summary.json under {out}")
    labels = [label_of(d) for d in dirs]
    table = aggregate(summaries, labels)
    scenario = summaries[0]["scenario"]
    columns = [c for _, c in COLUMNS]
    header = "| strategy | seeds | " + " | ".join(columns) + " |"
    lines = [
        f"# fedcl compare: scenario {scenario}",
        "",
        "Mean ± std over seeds (n/a: not defined for this scenario or strategy).",
        workload(out),
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
        _curves(labels, dirs), table, out / "comparison.png", title=f"scenario {scenario}"
    )
    return table


def _curves(
    labels: Sequence[str], dirs: Sequence[Path]
) -> dict[str, list[tuple[int, float, float]]]:
    """Per entry: (round, mean Dice, std) over its seeds."""
    per_round: dict[str, dict[int, list[float]]] = {}
    for label, run_dir in zip(labels, dirs, strict=True):
        rounds = per_round.setdefault(label, {})
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
