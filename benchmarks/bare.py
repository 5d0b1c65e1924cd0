"""The baseline: fedcl's federated workload as a bare in-process PyTorch loop.

Hospitals train one after another on the same tiles, with the same model, schedule and
per-round seeds as ``fedcl run``; the server averages (weights = tiles) and evaluates
the global model on every hospital's held-out tiles after every round (and before the
first), as fedcl's server does. No Flower, no Ray, no messages.

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
from fedcl.data import NUM_CLASSES, TileDataset
from fedcl.hospital import round_seed
from fedcl.models import build_model
from fedcl.scenarios import scenario_of
from fedcl.training import evaluate, train_local


def run_bare(config: RunConfig) -> dict:
    """Run ``config`` (iid) as a plain loop; return wall time, final Dice, training time."""
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    global_model = build_model(config.model, NUM_CLASSES)
    tests = [scenario_of(config).test_dataset(h, 0) for h in range(config.clients)]
    data: dict[int, TileDataset] = {}
    local = build_model(config.model, NUM_CLASSES)
    train_seconds: list[float] = []

    def dice() -> float:
        return statistics.fmean(evaluate(global_model, t).dice for t in tests)

    history = [dice()]
    round_seconds = []
    for server_round in range(1, config.rounds + 1):
        round_start = time.perf_counter()
        states, weights = [], []
        for h in range(config.clients):
            if h not in data:  # generated once, as fedcl caches it per hospital
                data[h] = scenario_of(config).train_dataset(h, server_round)
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
        "round_seconds": round_seconds,  # [0] includes generating the training tiles
    }


if __name__ == "__main__":
    outcome = run_bare(from_toml(sys.argv[1]))
    print(json.dumps(outcome))
