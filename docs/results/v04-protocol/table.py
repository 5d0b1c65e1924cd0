"""Print the study's tables in docs/RESULTS.md from the scenario tables beside this script.

One row per entry of the study, one column per scenario (both as ``study.sh`` names
them, in its order), each read where the scenario's targets are: its first headline
figure, with each hospital's own statistics except where hospitals drift (as run). First
the mean ± std over the reporting seeds in the scenario's ``per-seed.csv`` (``n`` where
fewer than five; ``-`` where none yet; the best strategy with every seed in bold, the
joint and local-only bounds aside), then each entry minus FedAvg, seed for seed, with
its 95 % interval. A network without running statistics (GroupNorm) has no
own-statistics reading: its cells are as run, and say so.

    python docs/results/v04-protocol/table.py           # print the tables
    python docs/results/v04-protocol/table.py --write   # and put them into docs/RESULTS.md

``per-seed.csv`` is what ``fedcl compare`` (or ``fedcl report``) wrote from the runs of a
scenario folder: run ``fedcl report`` on a folder after adding runs by hand.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
from pathlib import Path

from fedcl.compare import BASELINE, target_figure
from fedcl.configure import from_run_dir
from fedcl.data import NUM_CLASSES
from fedcl.entries import VARIANT
from fedcl.metrics import OWN
from fedcl.models import build_model
from fedcl.normalization import has_running_stats
from fedcl.study import REPORTING_SEEDS, paired

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parents[1] / "RESULTS.md"
BOUNDS = ("joint", "local-only")  # not strategies: what keeping every tile, or none, gives
BEGIN = "<!-- study: python docs/results/v04-protocol/table.py -->\n"
END = "<!-- end study -->"

Figures = dict[int, dict[str, float | None]]  # per seed: every column of per-seed.csv


def study(variable: str) -> list[str]:
    """Return the comma-separated list ``study.sh`` assigns to ``variable`` (and ``+=``)."""
    script = (HERE / "study.sh").read_text()
    parts = re.findall(rf'^{variable}\+?="([^"]*)"', script, re.M)
    return [name for part in parts for name in part.split(",") if name]


def target(folder: str) -> str:
    """Return the figure a scenario folder's targets are read on (its scenario's)."""
    return target_figure(folder.split(VARIANT)[0])


def runs(folder: str) -> dict[str, Figures]:
    """Per entry label: its figures on each reporting seed, from ``per-seed.csv``."""
    path = HERE / folder / "per-seed.csv"
    if not path.exists():
        return {}
    found: dict[str, Figures] = {}
    with path.open() as handle:
        for row in csv.DictReader(handle):
            seed = int(row.pop("seed"))
            if seed in REPORTING_SEEDS:
                figures = {k: float(v) if v else None for k, v in row.items() if k != "strategy"}
                found.setdefault(row["strategy"], {})[seed] = figures
    return found


def reading(folder: str, label: str, figure: str, seeds: Figures) -> str:
    """``figure``, or its as-run reading for a network without running statistics.

    Raises ``ValueError`` where a network with running statistics lacks the figure.
    """
    if not figure.endswith(OWN) or any(f[figure] is not None for f in seeds.values()):
        return figure
    config = from_run_dir(HERE / folder / f"{label}-s{min(seeds)}")
    if has_running_stats(build_model(config.model, NUM_CLASSES)):
        raise ValueError(f"{folder}/{label}: no {figure} although its network has statistics")
    return figure.removesuffix(OWN)


def _cell(values: list[float]) -> str:
    """``mean ± std`` over the seeds, ``n`` where fewer than all, ``-`` where none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.3f} n=1"
    n = "" if len(values) == len(REPORTING_SEEDS) else f" n={len(values)}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}{n}"


def tables() -> str:
    """Return the two Markdown tables."""
    names, folders = study("STRATEGIES"), study("SCENARIOS")
    head = "| entry | " + " | ".join(f"{f}: {target(f)}" for f in folders) + " |"
    rule = "|---" * (len(folders) + 1) + "|"
    means: dict[str, list[str]] = {name: [] for name in names}
    differences: dict[str, list[str]] = {name: [] for name in names if name != BASELINE}
    for folder in folders:
        figure, found = target(folder), runs(folder)
        base = found.get(BASELINE, {})
        cells: dict[str, tuple[str, float | None]] = {}  # a cell, and its mean if it may be best
        for name in names:
            seeds = found.get(name, {})
            column = reading(folder, name, figure, seeds) if seeds else figure
            values = [v for f in seeds.values() if (v := f[column]) is not None]
            note = "" if column == figure else " (as run)"
            ranked = len(values) == len(REPORTING_SEEDS) and not note and name not in BOUNDS
            cells[name] = (_cell(values) + note, statistics.fmean(values) if ranked else None)
            if name != BASELINE:
                d = paired(
                    {s: f[column] for s, f in seeds.items()},
                    {s: f[column] for s, f in base.items()},
                )
                differences[name].append(d.cell() + note if seeds and base else "-")
        ranked_means = [round(m, 3) for _, m in cells.values() if m is not None]
        best = max(ranked_means, default=None)
        for name, (cell, mean) in cells.items():
            means[name].append(
                f"**{cell}**" if mean is not None and round(mean, 3) == best else cell
            )
    lines = [head, rule, *(f"| {n} | " + " | ".join(c) + " |" for n, c in means.items())]
    lines += ["", "Each entry minus FedAvg, seed for seed, with its 95 % interval:", ""]
    lines += [head, rule, *(f"| {n} | " + " | ".join(c) + " |" for n, c in differences.items())]
    return "\n".join(lines) + "\n"


def write(text: str) -> None:
    """Put ``text`` between RESULTS' study markers."""
    page = RESULTS.read_text()
    if BEGIN not in page or END not in page:
        raise ValueError(f"{RESULTS} lacks the markers {BEGIN.strip()!r} and {END!r}")
    start, end = page.index(BEGIN) + len(BEGIN), page.index(END)
    RESULTS.write_text(page[:start] + text + page[end:])


def main() -> None:
    """Print the tables; with ``--write``, also put them into docs/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="put them into docs/RESULTS.md")
    args = parser.parse_args()
    text = tables()
    print(text, end="")
    if args.write:
        write(text)


if __name__ == "__main__":
    main()
