"""Replay DBC's shift detector with a first-loss jump on recorded runs (tuning seeds only).

A run's movement and first loss do not depend on the detector until its decisions
differ from the run's own (a teacher named in another round changes training after
that), so each rule is replayed exactly up to the first round where it calls a shift
the run did not, or misses one the run called; that round is printed, and nothing
after it. Runs must record ``first_loss`` (fedcl from 2026-12-06).

    python docs/results/v04-dbc/replay_loss_jump.py RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from fedcl.configure import from_run_dir
from fedcl.continuity import ShiftDetector
from fedcl.scenarios import scenario_of
from fedcl.strategies.dbc import DBCSettings

JUMPS = (0.0, 0.25, 0.35, 0.5, 0.75, 1.0)  # 0: the movement alone (the runs' own rule)


def replay(run: Path, jump: float) -> str:
    """Return the rounds the rule calls a shift in, up to its first difference from the run."""
    settings = from_run_dir(run).section(DBCSettings)
    detector = ShiftDetector(
        rho=settings.rho, window=settings.calm_rounds, bound=settings.shift_rounds, loss_jump=jump
    )
    calls = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        report = record.get("aggregation") or {}
        if report.get("movement") is None:
            continue
        detector.update(report["movement"], record.get("first_loss"))
        if detector.started != bool(report.get("shift_started")):
            verb = "calls" if detector.started else "misses"
            return " ".join([*map(str, calls), f"(then {verb} {record['round']})"])
        calls += [record["round"]] if detector.started else []
    return " ".join(map(str, calls)) or "none"


def ratios(run: Path) -> tuple[list[float], list[float]]:
    """Return each round's first loss over the last round's: outside stage starts, at them.

    From round 3 (round 2's is the random start's fall).
    """
    starts = scenario_of(from_run_dir(run)).stage_boundaries()
    loss = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        loss[record["round"]] = record.get("first_loss")
    calm, at_start = [], []
    for r in sorted(loss):
        if r >= 3 and loss[r] is not None and loss.get(r - 1) is not None:
            (at_start if r in starts else calm).append(loss[r] / loss[r - 1])
    return calm, at_start


def main(runs: list[Path]) -> None:
    """Print a Markdown table: per run, the stage starts and each rule's calls."""
    print("| run | stage starts | " + " | ".join(f"loss jump {j}" for j in JUMPS) + " |")
    print("|---" * (len(JUMPS) + 2) + "|")
    for run in runs:
        starts = scenario_of(from_run_dir(run)).stage_boundaries()
        cells = [replay(run, jump) for jump in JUMPS]
        name = f"{run.parent.name}/{run.name}"
        print(f"| {name} | {' '.join(map(str, starts)) or 'none'} | " + " | ".join(cells) + " |")
    calm, at_start = zip(*(ratios(run) for run in runs), strict=True)
    jumps = sorted(x for xs in at_start for x in xs)
    print(
        f"\nFirst loss over the last round's: at most {max(max(xs, default=0) for xs in calm):.3f}"
        " outside a stage start; at the stage starts: " + ", ".join(f"{x:.2f}" for x in jumps)
    )


if __name__ == "__main__":
    main([Path(p) for p in sys.argv[1:]])
