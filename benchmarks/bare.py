"""The baseline: fedcl's federated workload as a bare in-process PyTorch loop.

Hospitals train one after another on the same tiles, with the same model, schedule and
per-round seeds as ``fedcl run``; the server averages (weights = tiles), and the global
model is scored after every round (and before the first) on every hospital's held-out
tiles in the three readings fedcl's hospitals give (``evaluate_hospital``: as run, own
statistics, oracle statistics), so both do the same work. No Flower, no Ray, no
messages.

    python benchmarks/bare.py CONFIG.toml     # prints one JSON line: wall, dice, times
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from fedcl.config import RunConfig
from fedcl.configure import from_toml
from fedcl.data import NUM_CLASSES
from fedcl.evaluation import evaluate_hospital
from fedcl.hospital import round_seed
from fedcl.models import build_model
from fedcl.scenarios import scenario_of
from fedcl.training import train_local


def run_bare(config: RunConfig) -> dict:
    """Run ``config`` (iid) as a plain loop; return wall time, final Dice, training time."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    global_model = build_model(config.model, NUM_CLASSES)
    tests = [scenario_of(config).test_dataset(h, 0) for h in range(config.clients)]
    # iid tiles are the same every round: generated once, as fedcl caches them per hospital
    data = [scenario_of(config).train_dataset(h, 1) for h in range(config.clients)]
    local = build_model(config.model, NUM_CLASSES)
    train_seconds: list[float] = []

    def dice() -> float:
        return statistics.fmean(
            evaluate_hospital(global_model, {0: test}, own, batch_size=config.batch_size).dice[0]
            for test, own in zip(tests, data, strict=True)
        )

    history = [dice()]
    round_seconds = []
    for server_round in range(1, config.rounds + 1):
        round_start = time.perf_counter()
        states, weights = [], []
        for h in range(config.clients):
            local.load_state_dict(global_model.state_dict())
            began = time.perf_counter()
            result = train_local(
                local,
                data[h],
                **config.local_schedule(),
                seed=round_seed(config.seed, h, server_round),
            )
            train_seconds.append(time.perf_counter() - began)
            states.append({k: v.detach().clone() for k, v in local.state_dict().items()})
            weights.append(result.num_examples)
        total = sum(weights)
        averaged = {
            k: (sum(w * s[k].double() for w, s in zip(weights, states, strict=True)) / total).to(
                states[0][k].dtype
            )
            for k in states[0]
        }
        global_model.load_state_dict(averaged)
        history.append(dice())
        round_seconds.append(time.perf_counter() - round_start)
    return {
        "wall": time.perf_counter() - start,
        "dice": history,
        "train_seconds": train_seconds,
        "round_seconds": round_seconds,
    }


if __name__ == "__main__":
    outcome = run_bare(from_toml(sys.argv[1]))
    print(json.dumps(outcome))
