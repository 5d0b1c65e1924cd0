"""Flower glue shared by the ServerApp (``server/app.py``) and the ClientApp (``clients/``).

The server sends the whole resolved :class:`~fedcl.config.RunConfig` in every train
message's ``config`` record, so a hospital needs nothing but its ``partition-id``
(from ``context.node_config``) to rebuild its data, model and schedule. A hospital's
tiles are generated when first needed and kept in ``Context.state`` (Flower persists it
per node across rounds, in simulation and deployment); they are regenerated only when
the scenario changes the hospital's stage or drift status.
"""

from __future__ import annotations

import hashlib
import json
import random
import statistics
import time
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.grid.grid import NodeInfo
from flwr.serverapp.strategy import Strategy
from flwr.supercore.run import Run

from fedcl import seeds
from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES, TileDataset
from fedcl.errors import FedclError
from fedcl.models import build_model
from fedcl.recorder import RoundCallback, RunRecorder, read_checkpoint, read_metrics
from fedcl.scenarios import (
    DATA_KEYS,
    held_out_dataset,
    is_drifted,
    num_stages,
    stage_end_rounds,
    stage_of,
    train_dataset,
)
from fedcl.strategies import build_strategy
from fedcl.strategies.replies import PARTITION_KEY
from fedcl.training import evaluate, resolve_device, train_local

FLOWER_ROUND_TIMEOUT = 3600.0  # Strategy.start's own default: an hour per round

# Context.state entries: the hospital's tiles, and what they were generated from.
_DATA_KEY, _META_KEY = "fedcl-train-data", "fedcl-train-data-meta"


def round_seed(seed: int, hospital: int, server_round: int) -> int:
    """Seed of one hospital's batch order in one round (independent streams)."""
    return int(seeds.stream(seed, seeds.BATCH_ORDER, hospital, server_round).generate_state(1)[0])


def _data_fingerprint(config: RunConfig, hospital: int, server_round: int) -> str:
    # What determines the tiles a hospital trains on; a change invalidates the cache.
    values = {k: config.to_mapping()[k] for k in DATA_KEYS} | {
        "hospital": hospital,
        "stage": stage_of(config, server_round),
        "drifted": is_drifted(config, hospital, server_round),
    }
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def local_train_data(
    config: RunConfig, hospital: int, server_round: int, state: RecordDict
) -> TileDataset:
    """Return the tiles the hospital trains on this round, kept in ``state``.

    Generated when first needed and again only when the stage or drift status
    changes; the previous stage's tiles are then gone, as in the scenario.
    """
    fingerprint = _data_fingerprint(config, hospital, server_round)
    cached = state.array_records.get(_DATA_KEY)
    meta = state.config_records.get(_META_KEY)
    if cached is not None and meta is not None and meta.get("fingerprint") == fingerprint:
        return TileDataset(cached["images"].numpy(), cached["masks"].numpy(), NUM_CLASSES)
    data = train_dataset(config, hospital, server_round)
    state[_DATA_KEY] = ArrayRecord({"images": Array(data.images), "masks": Array(data.masks)})
    state[_META_KEY] = ConfigRecord({"fingerprint": fingerprint})
    return data


def handle_train(msg: Message, context: Context) -> Message:
    """Train the received global model on this hospital's data; reply with it."""
    sent = msg.content.config_records["config"]
    config = RunConfig.from_mapping(sent, source="train message", strict=False)
    hospital = int(context.node_config[PARTITION_KEY])
    if hospital >= config.clients:
        raise FedclError(
            f"this SuperNode has partition-id {hospital} but the run has clients="
            f"{config.clients}: start exactly one SuperNode per hospital "
            f"(num-supernodes = clients)"
        )
    server_round = int(sent["server-round"])  # type: ignore[arg-type]
    data = local_train_data(config, hospital, server_round, context.state)
    model = build_model(config.model, NUM_CLASSES)
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    model.to(resolve_device(config.device))  # CUDA where this hospital has it (auto)
    result = train_local(
        model,
        data,
        **config.local_schedule(),
        seed=round_seed(config.seed, hospital, server_round),
        proximal_mu=config.proximal_mu,  # what the strategy sent: > 0 only from FedProx
    )
    metrics = MetricRecord(
        {
            "train-loss": result.loss,
            "num-examples": result.num_examples,  # FedAvg weight: samples, not batches
            PARTITION_KEY: hospital,
        }
    )
    content = RecordDict({"arrays": ArrayRecord(model.cpu().state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


class ServerEvaluation:
    """Server-side evaluation of the global model on every hospital's clean test tiles.

    Called by ``Strategy.start`` before round 1 (round 0) and after every round. It
    evaluates the test data of every stage seen so far, and of every stage at the end
    of a stage (a row of the stage x stage matrix), then completes the round's record
    in the run directory.
    """

    def __init__(
        self, config: RunConfig, recorder: RunRecorder, strategy: Strategy, done: int = 0
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.strategy = strategy
        self.done = done  # rounds a resumed run had completed: Flower counts from 1 again
        self.model = build_model(config.model, NUM_CLASSES).to(resolve_device(config.device))
        self.stage_ends = set(stage_end_rounds(config))
        self._test_sets: dict[int, list[TileDataset]] = {}

    def test_sets(self, stage: int) -> list[TileDataset]:
        """Every hospital's clean test tiles of ``stage`` (built once)."""
        if stage not in self._test_sets:
            self._test_sets[stage] = [
                held_out_dataset(self.config, h, stage) for h in range(self.config.clients)
            ]
        return self._test_sets[stage]

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Evaluate ``arrays`` (the global model after ``server_round``) and record it."""
        if self.done and server_round == 0:  # resumed: already evaluated and recorded
            return MetricRecord({"dice": float(self.recorder.records[-1]["dice"] or 0.0)})
        server_round += self.done
        state_dict = arrays.to_torch_state_dict()
        self.model.load_state_dict(state_dict)
        current = stage_of(self.config, server_round)
        stages = num_stages(self.config)
        evaluated = range(stages) if server_round in self.stage_ends else range(current + 1)
        results = {s: [evaluate(self.model, d) for d in self.test_sets(s)] for s in evaluated}
        seen = [results[s] for s in range(current + 1)]
        per_hospital = [
            statistics.fmean(stage[h].dice for stage in seen) for h in range(self.config.clients)
        ]
        record = self.recorder.round_evaluated(
            server_round,
            {
                "stage": current,
                "dice": statistics.fmean(per_hospital),
                "dice_per_hospital": per_hospital,
                "dice_per_stage": [
                    statistics.fmean(r.dice for r in results[s]) if s in results else None
                    for s in range(stages)
                ],
                "test_loss": statistics.fmean(r.loss for stage in seen for r in stage),
            },
            checkpoint={
                "round": server_round,
                "model": state_dict,
                # cross-round strategy state (DBC: anchor, history); {} for stateless ones
                "strategy": getattr(self.strategy, "state_dict", dict)(),
                # fedcl's own randomness is seeded per use (fedcl.seeds); these cover
                # anything else drawing from the global generators (Flower's sampling).
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            },
        )
        metrics = {"dice": record["dice"]} | {
            f"dice-{h}": d for h, d in enumerate(record["dice_per_hospital"])
        }
        return MetricRecord({k: v for k, v in metrics.items() if v is not None})


class PromptGrid(Grid):
    """A :class:`Grid` that polls for replies every ``interval`` seconds.

    Flower's deployment grid (``HttpGrid``) sleeps 3 s between pulls, so every round
    waited on average 1.5 s after the last reply had arrived; the simulation's grid
    polls every 0.1 s. Everything else is delegated to the wrapped grid.
    """

    def __init__(self, grid: Grid, interval: float = 0.1) -> None:
        self.grid = grid
        self.interval = interval

    def set_run(self, run: Run) -> None:
        """Delegate to the wrapped grid."""
        self.grid.set_run(run)

    @property
    def run(self) -> Run:
        """Delegate to the wrapped grid."""
        return self.grid.run

    def create_message(self, *args: Any, **kwargs: Any) -> Message:
        """Delegate to the wrapped grid."""
        return self.grid.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        """Delegate to the wrapped grid."""
        return self.grid.get_node_ids()

    def get_nodes(self) -> Iterable[NodeInfo]:
        """Delegate to the wrapped grid."""
        return self.grid.get_nodes()

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        """Delegate to the wrapped grid."""
        return self.grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        """Delegate to the wrapped grid."""
        return self.grid.pull_messages(message_ids)

    def send_and_receive(
        self, messages: Iterable[Message], *, timeout: float | None = None
    ) -> Iterable[Message]:
        """Push ``messages``; pull replies every ``interval`` s until all are in or timeout."""
        pending = set(self.push_messages(messages))
        end = time.monotonic() + (timeout or 0.0)
        replies: list[Message] = []
        while timeout is None or time.monotonic() < end:
            pulled = list(self.pull_messages(pending))
            replies += pulled
            pending -= {m.metadata.reply_to_message_id for m in pulled}
            if not pending:
                break
            time.sleep(self.interval)
        return replies


def serve(
    grid: Grid,
    config: RunConfig,
    callbacks: Sequence[RoundCallback] = (),
    resume: bool = False,
) -> dict:
    """Run the whole federated training of ``config`` on ``grid``; return the summary.

    ``resume``: continue the run in ``config.out`` from its ``checkpoint.pt`` (the
    rounds after the checkpoint's are run again; the result equals an uninterrupted
    run's on CPU).
    """
    config = config.with_run_dir()
    grid = PromptGrid(grid)
    done, records, checkpoint = 0, [], None
    if resume:
        checkpoint = read_checkpoint(config.out)
        done = int(checkpoint["round"])
        # A kill between the metrics line and the checkpoint leaves one round more.
        records = [r for r in read_metrics(config.out, complete_only=True) if r["round"] <= done]
    recorder = RunRecorder(config, callbacks, records)

    def on_train(
        server_round: int,
        _replies: list[Message],
        metrics: MetricRecord | None,
        report: dict[str, Any] | None,
    ) -> None:
        numbers = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)}
        recorder.train_aggregated(server_round, numbers, report)

    strategy = build_strategy(config, on_train, round_offset=done)
    if checkpoint is not None:
        initial = checkpoint["model"]
        if hasattr(strategy, "load_state_dict"):
            strategy.load_state_dict(checkpoint["strategy"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        random.setstate(checkpoint["rng"]["python"])
    else:
        with torch.random.fork_rng():  # seed the initial model without leaking global state
            torch.manual_seed(config.seed)
            initial = build_model(config.model, NUM_CLASSES).state_dict()
    if done < config.rounds:
        strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(initial),
            num_rounds=config.rounds - done,
            timeout=config.round_timeout or FLOWER_ROUND_TIMEOUT,
            # The client applies the proximal-mu it receives: 0 unless the strategy
            # (FedProx and its subclasses) injects its own into the train config.
            train_config=ConfigRecord(dict(config.to_mapping() | {"proximal-mu": 0.0})),
            evaluate_fn=ServerEvaluation(config, recorder, strategy, done),
        )
    return recorder.finish()
