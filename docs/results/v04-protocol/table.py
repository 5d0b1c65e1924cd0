"""Print the study's tables in docs/RESULTS.md from the run directories beside this script.

One row per entry of the study (``study.sh``'s ``STRATEGIES``, in its order), one column
per scenario, each read as its targets are: *own statistics*, except where hospitals
drift (*as run*); final Dice where nothing is staged, ACC where it is. First the mean ±
std over the reporting seeds run so far (``n`` where fewer than five; ``-`` where none
is committed yet; the best of the strategies in bold, the two bounds aside), then each
entry minus FedAvg, seed for seed, with its 95 % interval. A network without running
statistics (GroupNorm) has no own-statistics reading: it appears, and is paired, as run.

    python docs/results/v04-protocol/table.py           # print the tables
    python docs/results/v04-protocol/table.py --write   # and put them into docs/RESULTS.md
"""

from __future__ import annotations

import argparse
import re
import statistics
from pathlib import Path

from fedcl.compare import collect, label_of, per_seed
from fedcl.metrics import OWN
from fedcl.study import REPORTING_SEEDS, paired

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parents[1] / "RESULTS.md"
# (folder, column title, the figure its targets read)
SCENARIOS = (
    ("iid", "iid: final Dice", "final_dice_own_stats"),
    ("client-drift", "stain drift: final Dice (as run)", "final_dice"),
    ("client-drift+drift-kind=annotation", "annotation drift: final Dice (as run)", "final_dice"),
    ("catastrophic-forgetting", "tissue shift: ACC", "acc_own_stats"),
    ("catastrophic-forgetting+stage-shift=classes", "class shift: ACC", "acc_own_stats"),
    ("drift-and-forgetting", "drift and forgetting: ACC (as run)", "acc"),
)
BOUNDS = ("joint", "local-only")  # not strategies: what keeping every tile, or none, gives
BASELINE = "fedavg"
BEGIN = "<!-- study: python docs/results/v04-protocol/table.py -->"
END = "<!-- end study -->"


def entries() -> list[str]:
    """Return the study's entries as ``study.sh`` names them (its ``STRATEGIES`` lines)."""
    script = (HERE / "study.sh").read_text()
    parts = re.findall(r'^STRATEGIES\+?="([^"]*)"', script, re.M)
    return [label for part in parts for label in part.split(",") if label]


def runs() -> dict[str, dict[str, dict[int, dict[str, float | None]]]]:
    """Per scenario folder: every entry's figures per reporting seed (no other seed)."""
    found = {}
    for folder, _, _ in SCENARIOS:
        summaries, dirs = collect(HERE / folder) if (HERE / folder).is_dir() else ([], [])
        by_label = per_seed(summaries, [label_of(d) for d in dirs])
        found[folder] = {
            label: {s: f for s, f in seeds.items() if s in REPORTING_SEEDS}
            for label, seeds in by_label.items()
        }
    return found


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
    names, found = entries(), runs()
    head = "| entry | " + " | ".join(title for _, title, _ in SCENARIOS) + " |"
    rule = "|---" * (len(SCENARIOS) + 1) + "|"
    means: dict[str, list[str]] = {name: [] for name in names}
    differences: dict[str, list[str]] = {name: [] for name in names if name != BASELINE}
    for folder, _, figure in SCENARIOS:
        seeds = found[folder]
        read = {name: _reading(seeds.get(name, {}), figure) for name in names}
        values = {name: _values(seeds.get(name, {}), read[name]) for name in names}
        strategies = [statistics.fmean(v) for n, v in values.items() if v and n not in BOUNDS]
        best = round(max(strategies), 3) if strategies else None
        for name, v in values.items():
            cell = _cell(v) + (" (as run)" if v and read[name] != figure else "")
            top = bool(v) and name not in BOUNDS and round(statistics.fmean(v), 3) == best
            means[name].append(f"**{cell}**" if top else cell)
        base = seeds.get(BASELINE, {})
        for name in differences:
            mine, col = seeds.get(name, {}), read[name]
            if not (mine and base):
                differences[name].append("-")
                continue
            d = paired({s: f[col] for s, f in mine.items()}, {s: f[col] for s, f in base.items()})
            differences[name].append(d.cell() + (" (as run)" if col != figure else ""))
    lines = [head, rule, *(f"| {n} | " + " | ".join(c) + " |" for n, c in means.items())]
    lines += ["", "Each entry minus FedAvg, seed for seed, with its 95 % interval:", ""]
    lines += [head, rule, *(f"| {n} | " + " | ".join(c) + " |" for n, c in differences.items())]
    return "\n".join(lines) + "\n"


def _reading(seeds: dict[int, dict[str, float | None]], figure: str) -> str:
    """``figure``, or its as-run reading for a network without running statistics."""
    own = any(f[figure] is not None for f in seeds.values())
    return figure if own or not seeds else figure.removesuffix(OWN)


def _values(seeds: dict[int, dict[str, float | None]], column: str) -> list[float]:
    return [v for f in seeds.values() if (v := f[column]) is not None]


def main() -> None:
    """Print the tables; with ``--write``, also replace the block in docs/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="put them into docs/RESULTS.md")
    text = tables()
    print(text, end="")
    if parser.parse_args().write:
        page = RESULTS.read_text()
        start, end = page.index(BEGIN) + len(BEGIN) + 1, page.index(END)
        RESULTS.write_text(page[:start] + text + page[end:])


if __name__ == "__main__":
    main()
