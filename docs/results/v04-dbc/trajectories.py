"""Per-round Dice of the current stage and of the first stage, own statistics, mean of seeds.

Descriptive only (no constant is chosen on it). Reads a comparison's run directories:

    python docs/results/v04-dbc/trajectories.py docs/results/v04-protocol/catastrophic-forgetting \
        fedavg lwf dbc joint --seeds 10,11,12,13,14
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def trajectory(run: Path) -> dict[int, list[float | None]]:
    """Return each round's per-stage Dice (own statistics) of one run."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["round"]: r["dice_per_stage_own_stats"] for r in rows if r["round"] > 0}


def main() -> None:
    """Print one line per strategy: ``current/first`` for every round."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("strategies", nargs="+")
    parser.add_argument("--seeds", default="10,11,12,13,14")
    parser.add_argument("--rounds-per-stage", type=int, default=5)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    print("round".ljust(8), " ".join(f"{r:>9}" for r in range(1, 16)))
    for name in args.strategies:
        runs = [trajectory(args.directory / f"{name}-s{seed}") for seed in seeds]
        cells = []
        for rnd in sorted(runs[0]):
            stage = (rnd - 1) // args.rounds_per_stage
            if any(run[rnd] is None or run[rnd][stage] is None for run in runs):  # not scored
                cells.append("-")
                continue
            current = statistics.fmean(run[rnd][stage] for run in runs)
            first = statistics.fmean(run[rnd][0] for run in runs)
            cells.append(f"{current:.2f}/{first:.2f}")
        print(name.ljust(8), " ".join(f"{c:>9}" for c in cells))


if __name__ == "__main__":
    main()
