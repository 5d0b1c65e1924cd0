"""DBC's scoring cost as a share of a round, by hospitals and reference-set size.

Scoring time: DBC's own ``seconds_scoring`` (every reply's and the global model's
outputs on the reference set, Barlow continuity scores, consensus filter), measured in
this process on mock replies (the global model plus noise: the cost does not depend on
the weights), median of 3 rounds before consolidation starts. Round time: round 2 of a
real ``fedcl run --strategy dbc`` at that hospital count with the default reference set
(32 tiles), less that round's own scoring seconds, plus the measured scoring at each
size: ``share = s(N, R) / (round(N) - s_run(N) + s(N, R))``. (Subtracting the mock
``s(N, 32)`` instead made the remainder negative when the machine was loaded.)

    python benchmarks/dbc_cost.py              # 5, 10, 20, 50 hospitals x 16..128 tiles
    python benchmarks/dbc_cost.py --smoke
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
from pathlib import Path

import torch
from common import fedcl_run, machine, result
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcl.config import RunConfig
from fedcl.strategies.catalog import build_strategy


class _Grid:
    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))


def scoring_seconds(config: RunConfig, rounds: int = 3) -> float:
    """Median DBC scoring seconds for ``config.clients`` mock replies."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1  # Messages
    strategy = build_strategy(config)
    torch.manual_seed(0)
    global_state = strategy.inner.model.state_dict()  # type: ignore[attr-defined]
    seconds = []
    for server_round in range(1, rounds + 1):
        arrays = ArrayRecord(global_state)
        messages = list(
            strategy.configure_train(server_round, arrays, ConfigRecord(), _Grid(config.clients))
        )
        replies = []
        for h, message in enumerate(messages):
            state = {
                k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
                for k, v in global_state.items()
            }
            metrics = MetricRecord({"num-examples": 200, "partition-id": h})
            content = RecordDict({"arrays": ArrayRecord(state), "metrics": metrics})
            replies.append(Message(content=content, reply_to=message))
        strategy.aggregate_train(server_round, replies)
        seconds.append(strategy.round_report["seconds_scoring"])  # type: ignore[index]
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.ERROR)  # the mock rounds: no Flower chatter
    counts, sizes, base = [5, 10, 20, 50], [16, 32, 64, 128], RunConfig(strategy="dbc")
    if args.smoke:
        counts, sizes = [3], [8, 32]
        base = RunConfig(strategy="dbc", image_size=32, train_tiles=16, test_tiles=8)
    print(machine())
    shares: dict[tuple[int, int], float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in counts:
            config = base.replace(clients=n, rounds=2)
            run = fedcl_run(config, Path(tmp) / f"n{n}")
            round_2 = next(r for r in run["records"] if r["round"] == 2)
            # everything in round 2 but its scoring (DBC times it in the round itself)
            rest = round_2["wall_seconds"] - round_2["aggregation"]["seconds_scoring"]
            for size in sizes:
                s = scoring_seconds(config.replace(reference_size=size))
                shares[(n, size)] = s / (rest + s)
                print(
                    f"{n:3d} hospitals, {size:3d} reference tiles: scoring {s:.3f} s of a "
                    f"{rest + s:.2f} s round = {100 * shares[(n, size)]:.1f} %",
                    flush=True,
                )
    figures = {f"share_n{n}_r{r}": v for (n, r), v in shares.items()}
    result(**figures)


if __name__ == "__main__":
    main()
