"""A whole study: separate `fedcl run`s, `fedcl compare`, `fedcl compare --parallel 2`.

The same small study, 3 strategies x 2 seeds (FedAvg, FedMedian, FedTrimmedAvg: the
same local training, aggregations that cost next to nothing), made (a) as one
``fedcl run`` process per run, (b) as one ``fedcl compare`` (one Ray for the study,
runs one after another), (c) as ``fedcl compare --parallel 2`` (two runs at once on
that Ray); beside (d) the bare PyTorch loop (``benchmarks/bare.py``, one fresh process
per run) doing the same training and evaluation. Each timed from launch to exit.
Prints each way's wall time, runs per hour and its ratio to the bare loop's total.

    python benchmarks/study.py              # default workload, 5 rounds (about 20 min)
    python benchmarks/study.py --smoke      # tiny workload, 2 strategies x 1 seed
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, changed_flags, fedcl_run, result, workload
from overhead import bare_run

from fedcl.config import RunConfig

STRATEGIES = ("fedavg", "fedmedian", "fedtrimmedavg")
SEEDS = (0, 1)


def compare_wall(
    config: RunConfig, pairs: list[tuple[str, int]], out: Path, parallel: int
) -> float:
    """Seconds of one ``fedcl compare`` of the study's ``pairs`` into ``out``, launch to exit."""
    strategies, seeds = dict.fromkeys(s for s, _ in pairs), dict.fromkeys(seed for _, seed in pairs)
    command = [sys.executable, "-m", "fedcl", "compare", "--strategies", ",".join(strategies)]
    command += ["--seeds", ",".join(map(str, seeds)), "--parallel", str(parallel)]
    start = time.perf_counter()
    subprocess.run(
        [*command, *changed_flags(config, "strategy", "seed", "out"), "--out", str(out)],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return time.perf_counter() - start


def main() -> None:
    config, _ = workload(__doc__.splitlines()[0])
    smoke = "--smoke" in sys.argv  # a check that it works: the fewest runs that show each way
    strategies, seeds = (STRATEGIES[:2], SEEDS[:1]) if smoke else (STRATEGIES, SEEDS)
    pairs = [(strategy, seed) for strategy in strategies for seed in seeds]
    with tempfile.TemporaryDirectory() as tmp:
        walls = {
            "runs": sum(
                fedcl_run(config.replace(strategy=s, seed=seed), Path(tmp) / f"{s}-{seed}")["wall"]
                for s, seed in pairs
            ),
            "compare": compare_wall(config, pairs, Path(tmp) / "compare", 1),
            "parallel": compare_wall(config, pairs, Path(tmp) / "parallel", 2),
            "bare": sum(
                bare_run(config.replace(seed=seed), Path(tmp))["process_wall"] for _, seed in pairs
            ),
        }
    for way, wall in walls.items():
        print(
            f"{way:9s} {wall:7.1f} s  {len(pairs) / wall * 3600:6.1f} runs/h  "
            f"{wall / walls['bare']:.2f}x the bare loop"
        )
    result(
        **{f"{way}_s": wall for way, wall in walls.items()},
        **{f"{way}_ratio": walls[way] / walls["bare"] for way in ("runs", "compare", "parallel")},
        runs=len(pairs),
        hospitals=config.clients,
        rounds=config.rounds,
    )


if __name__ == "__main__":
    main()
