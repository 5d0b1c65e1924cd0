"""How clearly DBC's detector saw each stage boundary of recorded runs.

For every stage start of a staged run (rounds 1 + k x rounds-per-stage, k >= 1) prints
the round's movement, the level it had to exceed (``(1 + rho) x`` the median of the
last calm rounds, replayed from the run's own series with its settings) and their
ratio (the margin: above 1, the detector fired), and the rounds the run called shifts.

    python docs/results/v04-dbc/margins.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from fedcl.configure import from_run_dir
from fedcl.strategies.dbc import DBCSettings


def margins(run: Path) -> tuple[list[tuple[int, float, float]], list[int]]:
    """Return (round, movement, level) at each stage start, and the rounds shifts began."""
    config = from_run_dir(run)
    settings = config.section(DBCSettings)
    starts = {1 + k * config.rounds_per_stage for k in range(1, config.stages)}
    calm: list[float] = []
    found, called = [], []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        report = record.get("aggregation") or {}
        movement = report.get("movement")
        if movement is None:
            continue
        recent = calm[-settings.calm_rounds :]
        level = (1 + settings.rho) * statistics.median(recent) if len(recent) >= 2 else None
        if record["round"] in starts and level is not None:
            found.append((record["round"], movement, level))
        if report.get("shift_started"):
            called.append(record["round"])
        if level is None or movement <= level:
            calm.append(movement)
    return found, called


if __name__ == "__main__":
    for path in map(Path, sys.argv[1:]):
        found, called = margins(path)
        cells = [f"round {r}: {m:.3f} / {lv:.3f} = {m / lv:.2f}" for r, m, lv in found]
        print(f"{path.parent.name}/{path.name}: " + " | ".join(cells) + f" | called {called}")
