"""``fedcl compare``: strategies (and variants) on scenarios, seed for seed, in tables.

Every entry x seed pair runs as its own ``fedcl run`` into ``OUT/<entry>-s<seed>``
(``OUT/<scenario>/<entry>-s<seed>`` with several scenarios) with the same options
otherwise. An entry is a strategy name, optionally with settings of its own:
``dbc+dbc-consolidation=off+dbc-steps=20`` is DBC with those two keys changed, a row
of its own (ablations). A run whose directory already holds a summary of the same
config is kept, and one with a checkpoint of the same config is resumed, so an
interrupted comparison continues where it stopped when run again.
:func:`write_comparison` reads the runs' ``summary.json`` files back and writes
``results.md``, ``results.csv`` (mean and std over seeds), ``per-seed.csv`` (every
run's figures), ``paired.csv`` (paired differences against a baseline entry,
:mod:`fedcl.study`) and ``comparison.png``; ``fedcl report OUT`` rebuilds those from the
run directories alone.
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedcl.config import RunConfig
from fedcl.configure import from_run_dir
from fedcl.entries import VARIANT, Entry
from fedcl.errors import FedclError
from fedcl.metrics import OWN, READINGS
from fedcl.plots import plot_comparison
from fedcl.plugins import SCENARIOS
from fedcl.recorder import read_metrics
from fedcl.scenarios import scenario_class, scenario_of
from fedcl.study import CONFIDENCE, Paired, paired, seed_note

# (summary path, column name) of every figure in the table: each Dice figure in every
# reading (fedcl.metrics.READINGS: as run, own statistics, oracle statistics)
COLUMNS = (
    *((("final_dice" + r,), "final_dice" + r) for r in READINGS),
    (("final_dice_last3",), "dice_last3"),
    *(((f + r,), f + r) for r in READINGS for f in ("acc", "bwt", "forgetting", "newest")),
    (("detection", "precision"), "precision"),
    (("detection", "recall"), "recall"),
    (("boundaries", "precision"), "boundary_precision"),
    (("boundaries", "recall"), "boundary_recall"),
    (("wall_seconds",), "wall_seconds"),
)
# the entry paired differences are taken against when a comparison has it and the
# command names no other (--baseline): the federated method every other one modifies
BASELINE = "fedavg"


def run_name(label: str, seed: int) -> str:
    """Directory name of one run: the entry's label (made path-safe) and the seed."""
    return f"{path_safe(label)}-s{seed}"


def label_of(run_dir: Path) -> str:
    """Return the entry label a run directory was named after (see :func:`run_name`)."""
    return run_dir.name.rsplit("-s", 1)[0]


def _same_config(run_dir: Path, config: RunConfig) -> bool:
    try:
        # where it was written does not matter: a moved or cloned results folder keeps its runs
        kept = from_run_dir(run_dir).replace(out=config.out)
    except FedclError:
        return False
    # a run that scored every round has every figure of one that scores fewer
    every = kept.evaluate_rounds == "every"
    fewer = kept.replace(evaluate_rounds=config.evaluate_rounds)
    return kept == config or (every and fewer == config)


def _finished(run_dir: Path, config: RunConfig) -> bool:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return bool(summary.get("rounds") == config.rounds)


def duration(seconds: float) -> str:
    """Return ``seconds`` as a person reads a duration: ``42 s``, ``5.1 min``, ``2 h 05 min``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min"


@dataclass(frozen=True)
class PlannedRun:
    """One entry x seed pair of a study and what this command does with it."""

    config: RunConfig  # its ``out`` is the run directory
    kept: bool  # complete: a summary of the same config
    resume: bool  # a checkpoint of the same config


def plan_runs(
    base: RunConfig,
    entries: Sequence[Entry],
    seeds: Sequence[int],
    out: Path,
    unset: Collection[str] = (),
) -> list[PlannedRun]:
    """Every entry x seed pair into ``out``, entry by entry, and whether it is kept or resumed."""
    runs = []
    for entry in entries:
        for seed in seeds:
            run_dir = out / run_name(entry.label, seed)
            config = entry.config(base, unset=unset).replace(seed=seed, out=str(run_dir))
            same = _same_config(run_dir, config)
            kept = same and _finished(run_dir, config)
            resume = same and not kept and (run_dir / "checkpoint.pt").exists()
            runs.append(PlannedRun(config, kept, resume))
    return runs


class StudyProgress:
    """Where a study stands: runs kept, made and to go, and the time to go.

    Time to go is reckoned by rounds (a study's scenarios may differ in length), at the
    pace of the runs this command made from their start (a resumed run did part of its
    rounds before, so it counts for the rounds left but not for the pace).
    """

    def __init__(self, runs: Sequence[PlannedRun], parallel: int = 1) -> None:
        self.total = len(runs)
        self.kept = sum(r.kept for r in runs)
        self.parallel = parallel  # runs at once
        self.running = 0
        self._rounds_left = sum(r.config.rounds for r in runs if not r.kept)
        self._made = 0
        self._seconds = 0.0  # of the runs made from their start
        self._rounds = 0  # ... and their rounds

    def starting(self, run: PlannedRun) -> str:
        """Return the line printed before ``run``: its number, the counts, the time to go."""
        line = f"fedcl compare: run {self.kept + self._made + self.running + 1} of {self.total}"
        counts = [f"{self.kept} kept"] if self.kept else []
        if self._made:
            counts.append(f"{self._made} made")
        if self.running:
            counts.append(f"{self.running} running")
        if counts:
            line += f" ({', '.join(counts)})"
        if run.resume:
            line += ", resumed"
        if self._rounds:
            pace = self._seconds / self._rounds  # a run's seconds a round, beside the others
            line += (
                f" · {duration(pace * run.config.rounds)} a run of its length"
                f" · about {duration(pace * self._rounds_left / self.parallel)} to go"
            )
        return line

    def made(self, run: PlannedRun, seconds: float) -> None:
        """Count ``run`` made in ``seconds``."""
        self._made += 1
        self._rounds_left -= run.config.rounds
        if not run.resume:
            self._seconds += seconds
            self._rounds += run.config.rounds

    def finished(self, seconds: float) -> str:
        """Return the line printed at the end of a study that took ``seconds``."""
        return (
            f"fedcl compare: {self.total} runs, {self.kept} kept, {self._made} made"
            f" in {duration(seconds)}"
        )


def run_all(
    base: RunConfig,
    entries: Sequence[Entry],
    seeds: Sequence[int],
    out: Path,
    run: Callable[[RunConfig, bool], None],
    progress: StudyProgress | None = None,
    unset: Collection[str] = (),
) -> list[Path]:
    """Run every entry x seed pair with ``run(config, resume)``; return the run directories.

    A pair whose directory holds a ``summary.json`` of the same config is skipped; one
    with only a checkpoint of the same config is resumed (``resume=True``). ``progress``:
    the study's, when these pairs are part of a larger one (else their own). ``unset``:
    :meth:`Entry.config`'s.
    """
    runs = plan_runs(base, entries, seeds, out, unset)
    _write_order(out, entries)
    run_planned(runs, run, progress or StudyProgress(runs))
    return [Path(r.config.out) for r in runs]


def run_planned(
    runs: Sequence[PlannedRun], run: Callable[[RunConfig, bool], None], progress: StudyProgress
) -> None:
    """Make every run not kept with ``run(config, resume)``, one after another."""
    for planned in runs:
        if planned.kept:
            print(_kept_line(planned))
            continue
        print(progress.starting(planned), flush=True)
        start = time.monotonic()
        run(planned.config, planned.resume)
        progress.made(planned, time.monotonic() - start)


def _kept_line(run: PlannedRun) -> str:
    return f"fedcl compare: {run.config.out} is complete, kept"


def _write_order(out: Path, entries: Sequence[Entry]) -> None:
    """Record the entries' order for the tables (the command's, then earlier ones')."""
    out.mkdir(parents=True, exist_ok=True)
    listed = [e.label for e in entries]
    (out / ORDER_FILE).write_text(
        json.dumps(list(dict.fromkeys(listed + _order(out))), indent=1) + "\n"
    )


def run_log(run_dir: Path) -> Path:
    """Return where a run made in a process of its own writes its output: beside it."""
    return run_dir.parent / f"{run_dir.name}.log"  # a label's dots are not a suffix


def run_parallel(
    runs: Sequence[PlannedRun],
    start: Callable[[PlannedRun], subprocess.Popen[bytes]],
    progress: StudyProgress,
    *,
    poll: float = 0.5,
) -> None:
    """Make every run not kept, ``progress.parallel`` at a time, each in its own process.

    ``start(run)`` starts one (:func:`fedcl.cli.runs.start`); a run that fails
    stops the study: the others are stopped (SIGTERM) and kept resumable.

    Raises
    ------
    FedclError
        Naming the run that failed and its exit code.
    """
    for kept in (r for r in runs if r.kept):
        print(_kept_line(kept))
    waiting = [r for r in runs if not r.kept]
    running: dict[subprocess.Popen[bytes], tuple[PlannedRun, float]] = {}
    try:
        while waiting or running:
            while waiting and len(running) < progress.parallel:
                planned = waiting.pop(0)
                print(progress.starting(planned), flush=True)
                running[start(planned)] = (planned, time.monotonic())
                progress.running = len(running)
            time.sleep(poll)
            for process, (planned, began) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[process]
                progress.running = len(running)
                if code != 0:
                    raise FedclError(
                        f"the run into {planned.config.out} failed (exit code {code}); "
                        f"its output: {run_log(Path(planned.config.out))}"
                    )
                progress.made(planned, time.monotonic() - began)
                print(f"fedcl compare: {planned.config.out} made", flush=True)
    finally:
        for process in running:
            process.terminate()
        for process in running:
            process.wait()


def run_scenarios(
    base: RunConfig,
    scenarios: Sequence[Entry],
    entries: Sequence[Entry],
    seeds: Sequence[int],
    out: Path,
    run: Callable[[RunConfig, bool], None],
    *,
    baseline: str | None = None,
    unset: Collection[str] = (),
    parallel: int = 1,
    start: Callable[[PlannedRun], subprocess.Popen[bytes]] | None = None,
) -> list[Path]:
    """:func:`run_all` per scenario entry into ``OUT/<entry>`` and a table for each.

    Returns the comparison directories (one per scenario entry: ``client-drift`` or
    ``client-drift+drift-kind=annotation``, :func:`fedcl.entries.parse_entry` with
    ``SCENARIOS``). Without ``scenarios`` the base config's scenario runs into ``out``
    itself. ``OUT/results.md`` has every scenario directory in ``out``, also those an
    earlier command wrote (so commands naming one scenario each can fill one
    comparison). ``baseline``: the entry of the paired differences
    (:func:`write_comparison`). ``unset``: keys of ``base`` the user did not choose
    (:meth:`Entry.config`), so that e.g. a staged scenario derives its ``rounds``.
    ``parallel`` > 1: that many runs at once over every scenario, each a process that
    ``start`` starts (:func:`run_parallel`), instead of ``run`` one after another.
    """
    began = time.monotonic()
    if scenarios:
        # a scenario entry's own rounds are chosen for its rows too
        configs = [
            (
                s.config(base, unset=unset),
                out / path_safe(s.label),
                () if "rounds" in s.settings else unset,
            )
            for s in scenarios
        ]
    else:
        configs = [(base, out, unset)]
    # every entry valid in every scenario before any run, and the study's size
    plans = [plan_runs(c, entries, seeds, d, u) for c, d, u in configs]
    planned = [r for runs in plans for r in runs]
    progress = StudyProgress(planned, parallel)
    for _, directory, _ in configs:
        _write_order(directory, entries)
    if parallel > 1:
        if start is None:
            raise ValueError("parallel runs need start, the function that starts one")
        run_parallel(planned, start, progress)
    for runs, (_, directory, _) in zip(plans, configs, strict=True):
        if parallel == 1:
            run_planned(runs, run, progress)
        write_comparison(directory, baseline)  # a scenario's table as soon as its runs are
    if scenarios:
        write_overview(out)
    print(progress.finished(time.monotonic() - began))
    return [directory for _, directory, _ in configs]


def comparison_dirs(out: Path) -> list[Path]:
    """Return the scenario sub-directories of a several-scenario comparison.

    The built-in scenarios in their order, each followed by its variants
    (``client-drift+drift-kind=annotation``), then any other; by name within each.
    """
    held = sorted(d for d in out.iterdir() if any(d.glob("*/summary.json"))) if out.is_dir() else []
    builtin = list(SCENARIOS.builtin)

    def rank(directory: Path) -> int:
        name = directory.name.split(VARIANT)[0]
        return builtin.index(name) if name in builtin else len(builtin)

    return sorted(held, key=rank)  # stable: by name within a rank


def _scenario_name(directory: Path) -> str:
    summaries = sorted(directory.glob("*/summary.json"))
    return str(json.loads(summaries[0].read_text())["scenario"]) if summaries else "iid"


def headline(directory: Path) -> tuple[str, ...]:
    """Return the headline figures of a scenario's comparison: its scenario's own choice."""
    return scenario_class(_scenario_name(directory)).headline


def target_figure(scenario: str) -> str:
    """Return the one figure a scenario's claims are read on.

    Its first headline figure; as run where hospitals drift, since their own statistics
    would be re-estimated on the drifted tiles (the drift itself).
    """
    cls = scenario_class(scenario)
    return cls.headline[0].removesuffix(OWN) if cls.drifting else cls.headline[0]


def path_safe(name: str) -> str:
    """Return ``name`` usable as a directory name (other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9_.+=-]+", "_", name)


OVERVIEW_NOTE = (
    "Each scenario on the figure its claims are read on (its first headline figure; as run "
    "where hospitals drift), mean ± std over seeds; the scenario tables below have every figure."
)


def write_overview(out: Path) -> None:
    """``OUT/results.md``: one table (entry x scenario), then every scenario's.

    The first table gives each scenario's :func:`target_figure` (a comparison of six
    scenarios has 30 headline figures: too many columns to read).

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
    columns = [(d.name, target_figure(_scenario_name(d))) for d in dirs]
    lines = [
        "# fedcl compare",
        "",
        OVERVIEW_NOTE,
        "",
        "| strategy | " + " | ".join(f"{name}: {c}" for name, c in columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for label in labels:
        cells = [
            _cell(*tables[name][label][c]) if label in tables[name] else "-" for name, c in columns
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    # titled by directory: a table's own title names its scenario, which variants share
    parts = [
        f"## scenario {d.name}\n" + (d / "results.md").read_text().partition("\n")[2] for d in dirs
    ]
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


def per_seed(
    summaries: Sequence[dict[str, Any]], labels: Sequence[str]
) -> dict[str, dict[int, dict[str, float | None]]]:
    """Per entry label (in first-seen order) and seed: every column's figure of that run."""
    runs: dict[str, dict[int, dict[str, float | None]]] = {}
    for summary, label in zip(summaries, labels, strict=True):
        figures = {column: _get(summary, path) for path, column in COLUMNS}
        runs.setdefault(label, {})[int(summary["seed"])] = figures
    return runs


def paired_differences(
    runs: dict[str, dict[int, dict[str, float | None]]],
    baseline: str,
    columns: Sequence[str],
) -> dict[str, dict[str, Paired]]:
    """Per entry other than ``baseline``, per column: entry minus baseline, seed for seed.

    ``runs`` is :func:`per_seed`'s; only seeds both entries ran (and both have the
    figure of) count (:func:`fedcl.study.paired`).
    """
    base = runs[baseline]
    return {
        label: {
            column: paired(
                {seed: figures[column] for seed, figures in seeds.items()},
                {seed: figures[column] for seed, figures in base.items()},
            )
            for column in columns
        }
        for label, seeds in runs.items()
        if label != baseline
    }


def _baseline(labels: Sequence[str], baseline: str | None) -> str | None:
    """Return the entry to pair against: ``baseline`` if named, else :data:`BASELINE` if present."""
    if baseline is None:
        return BASELINE if BASELINE in labels else None
    if path_safe(baseline) not in labels:
        raise FedclError(
            f"baseline {baseline!r} is not an entry of this comparison; its entries: "
            + ", ".join(dict.fromkeys(labels))
        )
    return path_safe(baseline)


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.3f}" if std is None else f"{mean:.3f} ± {std:.3f}"


def comparison_table(out: Path) -> dict[str, dict[str, Any]]:
    """Per entry label: seeds and (mean, std) of every column, for the runs in ``out``."""
    summaries, dirs = collect(out)
    return aggregate(summaries, [label_of(d) for d in dirs])


def write_comparison(out: Path, baseline: str | None = None) -> dict[str, dict[str, Any]]:
    """Write the tables and ``comparison.png`` for the runs in ``out``.

    ``results.md`` and ``results.csv``: mean and std over seeds, which seeds are tuning
    seeds (:func:`fedcl.study.seed_note`); ``per-seed.csv``: every run's figures. With a
    baseline entry (``baseline``, else :data:`BASELINE` where the comparison has it)
    ``results.md`` has a section of paired differences against it on the scenario's
    headline figures (:func:`headline`), and ``paired.csv`` the same numbers.

    Parameters
    ----------
    out : Path
        A comparison directory: run directories ``<label>-s<seed>`` with a
        ``summary.json``.
    baseline : str or None, optional
        The entry label to pair against. Default ``None``: :data:`BASELINE` if present,
        else no paired differences.

    Returns
    -------
    dict
        :func:`aggregate`'s table.

    Raises
    ------
    FileNotFoundError
        If ``out`` holds no run directory with a ``summary.json``.
    FedclError
        If ``baseline`` is not an entry of the comparison.
    """
    summaries, dirs = collect(out)
    if not summaries:
        raise FileNotFoundError(f"no run directories with a summary.json under {out}")
    labels = [label_of(d) for d in dirs]
    against = _baseline(labels, baseline)
    table = aggregate(summaries, labels)
    runs = per_seed(summaries, labels)
    scenario = summaries[0]["scenario"]
    if out.name.startswith(f"{scenario}+"):  # a scenario entry's directory: its keys too
        scenario = out.name
    columns = [c for _, c in COLUMNS]
    header = "| strategy | seeds | " + " | ".join(columns) + " |"
    lines = [
        f"# fedcl compare: scenario {scenario}",
        "",
        "Mean ± std over seeds (n/a: not defined for this scenario or strategy).",
        workload(out),
        *seed_note(seed for seeds in runs.values() for seed in seeds),
        "",
        header,
        "|" + "---|" * (len(columns) + 2),
    ]
    for strategy, row in table.items():
        cells = " | ".join(_cell(*row[c]) for c in columns)
        seeds = ",".join(str(s) for s in row["seeds"])
        lines.append(f"| {strategy} | {seeds} | {cells} |")
    claims = headline(out) if against else ()
    differences = paired_differences(runs, against, claims) if against else {}
    if against and differences:
        lines += ["", *_paired_section(differences, against, claims)]
        _write_paired_csv(out / "paired.csv", differences, against)
    else:  # nothing to pair (no baseline, or the baseline alone): no stale file either
        (out / "paired.csv").unlink(missing_ok=True)
    (out / "results.md").write_text("\n".join(lines) + "\n")
    with (out / "results.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["strategy", "seeds", *[f"{c}_{s}" for c in columns for s in ("mean", "std")]]
        )
        for strategy, row in table.items():
            values = [v for c in columns for v in row[c]]
            writer.writerow(
                [strategy, " ".join(str(s) for s in row["seeds"]), *map(_number, values)]
            )
    with (out / "per-seed.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", "seed", *columns])
        for strategy, by_seed in runs.items():
            for seed, figures in sorted(by_seed.items()):
                writer.writerow([strategy, seed, *(_number(figures[c]) for c in columns)])
    plot_comparison(
        _curves(labels, dirs), table, out / "comparison.png", title=f"scenario {scenario}"
    )
    return table


def _number(value: float | int | None) -> str:
    """Return a figure as a CSV cell: every digit (``repr``), empty where there is none."""
    return "" if value is None else repr(value)


def _paired_section(
    differences: dict[str, dict[str, Paired]], baseline: str, columns: Sequence[str]
) -> list[str]:
    """Return the lines of ``results.md``'s section of paired differences."""
    lines = [
        f"## Paired differences against {baseline}",
        "",
        (
            f"Entry minus {baseline}, seed for seed on the seeds both ran: the mean "
            f"difference, its {CONFIDENCE * 100:.0f} % interval (Student t over the per-seed "
            "differences, n - 1 degrees of freedom; none for n = 1) and n. Every run's "
            "figures: per-seed.csv."
        ),
        "",
        "| strategy | " + " | ".join(columns) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for label, row in differences.items():
        lines.append(f"| {label} | " + " | ".join(row[c].cell() for c in columns) + " |")
    return lines


def _write_paired_csv(path: Path, differences: dict[str, dict[str, Paired]], baseline: str) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["strategy", "baseline", "column", "mean", "low", "high", "n", "seeds"])
        for label, row in differences.items():
            for column, d in row.items():
                figures = (d.mean, d.low, d.high)
                seeds = " ".join(str(s) for s in d.seeds)
                writer.writerow([label, baseline, column, *map(_number, figures), d.n, seeds])


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
