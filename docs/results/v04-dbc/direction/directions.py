"""How far each hospital's outputs lean away from its peers', in a direction kept over rounds.

Reads ``output_means`` from DBC runs' ``metrics.jsonl`` (each reply's mean output on the
reference set per class). Per round, a reply's lean is its means minus the replies'
median; a hospital's lean over the run's ``dbc-window`` is the mean of its leans, so a
bias the same way every round stays and a round-to-round wobble averages out. The score
is that mean lean's size (L1 over classes) relative to the honest majority's, in log
units as DBC's evidence (``--per-class``: the largest class's lean over that class's
typical lean). One line per run with each hospital's range of the score from round 5
on; ``*`` marks the scenario's drifted hospitals. Where an honest hospital's range
reaches a drifted one's, no threshold separates them::

    python docs/results/v04-dbc/direction/directions.py RUN_DIR [RUN_DIR ...]
    python docs/results/v04-dbc/direction/directions.py --per-class RUN_DIR ...
"""

import json
import math
import sys
from pathlib import Path

import numpy as np

from fedcl.configure import from_run_dir
from fedcl.continuity.spatial import typical_peer_score
from fedcl.scenarios import scenario_of
from fedcl.strategies.dbc import DBCSettings

FIRST = 5  # rounds before this one are the early training's, not a hospital's habit


def scores(leans: dict[int, np.ndarray], per_class: bool) -> dict[int, float]:
    """Return each hospital's score from its mean lean (hospital -> classes)."""
    sizes = np.abs(np.array(list(leans.values())))
    if per_class:
        typical = np.array([typical_peer_score(list(column)) for column in sizes.T])
        return {h: math.log(float(np.max(s / typical))) for h, s in zip(leans, sizes, strict=True)}
    typical_size = typical_peer_score([float(s.sum()) for s in sizes])
    return {h: math.log(float(s.sum()) / typical_size) for h, s in zip(leans, sizes, strict=True)}


def ranges(run: Path, per_class: bool) -> str:
    """Return one line: each hospital's range of the score from round FIRST on."""
    config = from_run_dir(run)
    drifted, window = scenario_of(config).is_drifted, config.section(DBCSettings).window
    history: dict[int, list[np.ndarray]] = {}
    found: dict[int, list[tuple[float, bool]]] = {}
    for line in (run / "metrics.jsonl").open():
        record = json.loads(line)
        report = record.get("aggregation") or {}
        if not report.get("output_means"):
            continue
        means = np.array(report["output_means"])
        for hospital, lean in zip(
            report["hospitals"], means - np.median(means, axis=0), strict=True
        ):
            history.setdefault(hospital, []).append(lean)
        if record["round"] < FIRST:
            continue
        leans = {h: np.mean(history[h][-window:], axis=0) for h in report["hospitals"]}
        for hospital, score in scores(leans, per_class).items():
            found.setdefault(hospital, []).append((score, drifted(hospital, record["round"])))
    cells = []
    for hospital, seen in sorted(found.items()):
        low, high = min(s for s, _ in seen), max(s for s, _ in seen)
        cells.append(f"{'*' if seen[-1][1] else ''}h{hospital} {low:.2f}..{high:.2f}")
    return f"{run}: " + "; ".join(cells)


if __name__ == "__main__":
    args = sys.argv[1:]
    per_class = args[:1] == ["--per-class"]
    for path in args[per_class:]:
        print(ranges(Path(path), per_class))
