"""Local training throughput: tiles/s of a hospital inside fedcl vs the same loop bare.

Inside fedcl: the train handler of a simulated hospital (Ray actor with ``client-cpus``
threads), rounds 2.. only (round 1 also generates the tiles), split as the handler
reports it: receiving (model rebuilt and loaded, tiles from state), evaluating the
model received (every stage seen, three readings), training (the local epochs, the
hospital half's hooks). Bare: the same ``train_local`` on the same tiles in this process
with the same number of threads. ``ratio``: training inside fedcl against the bare loop;
``handler_ratio``: the whole handler against it; ``evaluation_share``: evaluation's part
of the handler.

    python benchmarks/throughput.py            # 5 hospitals x 4 rounds x 200 tiles
    python benchmarks/throughput.py --smoke
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import machine, result

from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES
from fedcl.hospital import round_seed
from fedcl.models import build_model
from fedcl.scenarios import scenario_of
from fedcl.training import train_local


def bare_seconds(config: RunConfig, repeats: int) -> list[float]:
    """Seconds of ``train_local`` for hospital 0, rounds 2.., with the actors' threads."""
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(config.client_cpus)))
    try:
        data = scenario_of(config).train_dataset(0, 1)
        model = build_model(config.model, NUM_CLASSES)
        schedule = config.local_schedule()
        train_local(model, data, **schedule, seed=0)  # warm-up, as the actors are by round 2
        times = []
        for server_round in range(2, 2 + repeats):
            start = time.perf_counter()
            train_local(model, data, **schedule, seed=round_seed(config.seed, 0, server_round))
            times.append(time.perf_counter() - start)
        return times
    finally:
        torch.set_num_threads(threads)


def fedcl_seconds(config: RunConfig, directory: Path) -> list[dict[str, float]]:
    """Seconds of the train handler inside a fedcl simulation and its phases, rounds 2.."""
    from fedcl.simulation import simulate

    here = str(Path(__file__).parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [here, os.environ.get("PYTHONPATH")] if p)
    times = directory / "times.jsonl"
    os.environ["FEDCL_BENCH_TIMES"] = str(times)
    import timed_clients

    simulate(config.replace(out=str(directory / "run")), client_app=timed_clients.app)
    records = [json.loads(line) for line in times.read_text().splitlines()]
    return [r for r in records if r["round"] >= 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    config = RunConfig(rounds=4)
    if args.smoke:
        config = RunConfig(clients=2, rounds=3, image_size=32, train_tiles=16, test_tiles=8)
    print(machine())
    tiles = config.train_tiles * config.local_epochs
    with tempfile.TemporaryDirectory() as tmp:
        inside = fedcl_seconds(config, Path(tmp))
    bare = bare_seconds(config, repeats=len(inside))

    def median(key: str) -> float:
        return statistics.median(r[key] for r in inside)

    bare_rate = tiles / statistics.median(bare)
    result(
        fedcl_tiles_per_s=tiles / median("training"),
        bare_tiles_per_s=bare_rate,
        ratio=tiles / median("training") / bare_rate,
        handler_ratio=tiles / median("seconds") / bare_rate,
        evaluation_share=statistics.median(r["evaluation"] / r["seconds"] for r in inside),
        receive_seconds=median("receive"),
        samples=len(inside),
        threads=max(1, int(config.client_cpus)),
    )


if __name__ == "__main__":
    main()
