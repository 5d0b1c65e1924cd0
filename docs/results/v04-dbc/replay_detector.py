"""Replay DBC's shift detector on recorded movement series (tuning seeds only).

The movement of a round does not depend on the detector until the detector first fires
(a teacher or a consolidation changes training after that), so a run's series up to
its first detection, or a whole run whose detector never fired (``--dbc-rho 1000``),
replays any rule exactly. Prints, per rule, the rounds each run would call a shift.

    python docs/results/v04-dbc/replay_detector.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fedcl.continuity import ShiftDetector


def movements(run: Path) -> list[tuple[int, float]]:
    """Return (round, movement) up to and including the run's first detection."""
    series = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        report = record.get("aggregation") or {}
        if report.get("movement") is not None:
            series.append((record["round"], report["movement"]))
            if report.get("shift_started"):
                break
    return series


def fired(series: list[tuple[int, float]], rho: float, window: int) -> list[int]:
    """Return the rounds a detector (``rho``, ``window`` calm rounds) begins a shift in."""
    detector = ShiftDetector(rho=rho, window=window, bound=3)
    found = []
    for server_round, movement in series:
        detector.update(movement)
        if detector.started:
            found.append(server_round)
    return found


if __name__ == "__main__":
    runs = [Path(p) for p in sys.argv[1:]]
    for rho in (2.0, 3.0):
        for window in (2, 3, 5, 10):
            cells = [f"{r.parent.name}/{r.name}: {fired(movements(r), rho, window)}" for r in runs]
            print(f"rho {rho} calm rounds {window:2d} | " + " | ".join(cells))
