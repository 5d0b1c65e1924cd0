"""Flower glue shared by the ServerApp (``server/app.py``) and the ClientApp (``clients/``).

The server sends the whole resolved :class:`~fedcl.config.RunConfig` in every train
message's ``config`` record, so a hospital needs nothing but its ``partition-id``
(from ``context.node_config``) to rebuild its data, model and schedule. Hospital data
is generated once and kept in ``Context.state`` (Flower persists it per node across
rounds, in simulation and deployment).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
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
from flwr.serverapp.strategy import Strategy

from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES, TileDataset, hospital_dataset
from fedcl.errors import FedclError
from fedcl.models import build_model
from fedcl.recorder import RoundCallback, RunRecorder
from fedcl.strategies import build_strategy
from fedcl.strategies.replies import PARTITION_KEY
from fedcl.training import evaluate, train_local

# Context.state entries: the hospital's tiles, and what they were generated from.
_DATA_KEY, _META_KEY = "fedcl-train-data", "fedcl-train-data-meta"


def round_seed(seed: int, hospital: int, server_round: int) -> int:
    """Seed of one hospital's batch order in one round (independent streams)."""
    return int(
        np.random.SeedSequence(seed, spawn_key=(3, hospital, server_round)).generate_state(1)[0]
    )


def _data_fingerprint(config: RunConfig, hospital: int) -> str:
    # What determines a hospital's training tiles; a change invalidates the cache.
    keys = ("seed", "scenario", "clients", "image-size", "train-tiles", "site-stain")
    values = {k: config.to_mapping()[k] for k in keys} | {"hospital": hospital}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def local_train_data(config: RunConfig, hospital: int, state: RecordDict) -> TileDataset:
    """Return the hospital's training tiles, generated on first use, kept in ``state``."""
    fingerprint = _data_fingerprint(config, hospital)
    cached = state.array_records.get(_DATA_KEY)
    meta = state.config_records.get(_META_KEY)
    if cached is not None and meta is not None and meta.get("fingerprint") == fingerprint:
        return TileDataset(cached["images"].numpy(), cached["masks"].numpy(), NUM_CLASSES)
    data = hospital_dataset(config, hospital, "train")
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
    data = local_train_data(config, hospital, context.state)
    model = build_model(config.model, NUM_CLASSES)
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
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
    content = RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics})
    return Message(content=content, reply_to=msg)


class ServerEvaluation:
    """Server-side evaluation of the global model on every hospital's test tiles.

    Called by ``Strategy.start`` before round 1 (round 0) and after every round;
    it also completes the round's record in the run directory.
    """

    def __init__(self, config: RunConfig, recorder: RunRecorder, strategy: Strategy) -> None:
        self.config = config
        self.recorder = recorder
        self.strategy = strategy
        self.model = build_model(config.model, NUM_CLASSES)
        self.test_sets = [hospital_dataset(config, h, "test") for h in range(config.clients)]

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord:
        """Evaluate ``arrays`` (the global model after ``server_round``) and record it."""
        state_dict = arrays.to_torch_state_dict()
        self.model.load_state_dict(state_dict)
        results = [evaluate(self.model, data) for data in self.test_sets]
        dice = [r.dice for r in results]
        loss = sum(r.loss for r in results) / len(results)
        checkpoint: dict[str, Any] = {
            "round": server_round,
            "model": state_dict,
            # cross-round strategy state (DBC: anchor, history); {} for stateless ones
            "strategy": getattr(self.strategy, "state_dict", dict)(),
        }
        record = self.recorder.round_evaluated(server_round, dice, loss, checkpoint)
        metrics = {"dice": record["dice"], "test-loss": loss}
        metrics |= {f"dice-{h}": d for h, d in enumerate(dice)}
        return MetricRecord({k: v for k, v in metrics.items() if _is_number(v)})


def _is_number(value: object) -> bool:
    return isinstance(value, float | int) and math.isfinite(value)


def serve(grid: Grid, config: RunConfig, callbacks: Sequence[RoundCallback] = ()) -> dict:
    """Run the whole federated training of ``config`` on ``grid``; return the summary."""
    config = config.with_run_dir()
    recorder = RunRecorder(config, callbacks)

    def on_train(
        server_round: int,
        _replies: list[Message],
        metrics: MetricRecord | None,
        report: dict[str, Any] | None,
    ) -> None:
        numbers = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)}
        recorder.train_aggregated(server_round, numbers, report)

    strategy = build_strategy(config, on_train)
    with torch.random.fork_rng():  # seed the initial model without leaking global state
        torch.manual_seed(config.seed)
        initial = build_model(config.model, NUM_CLASSES)
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial.state_dict()),
        num_rounds=config.rounds,
        # The client applies the proximal-mu it receives: 0 unless the strategy (FedProx
        # and its subclasses) injects its own into the train config.
        train_config=ConfigRecord(dict(config.to_mapping() | {"proximal-mu": 0.0})),
        evaluate_fn=ServerEvaluation(config, recorder, strategy),
    )
    return recorder.finish()
