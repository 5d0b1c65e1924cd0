"""Flower glue shared by the ServerApp (``server/app.py``) and the ClientApp (``clients/``).

The server sends the whole resolved :class:`~fedcl.config.RunConfig` in every train
message's ``config`` record, so a hospital needs nothing but its ``partition-id``
(from ``context.node_config``) to rebuild its data, model and schedule. A hospital's
tiles are generated when first needed and kept in ``Context.state`` (Flower persists it
per node across rounds, in simulation and deployment); they are regenerated only when
the scenario changes the hospital's stage or drift status.

Evaluation happens at the hospitals (``evaluation = "hospitals"``): a hospital scores
the model it receives on its own test tiles before it trains and sends the figures with
its reply, so the record of round t is complete once round t + 1's replies are in; one
evaluate message after the last round scores the final model. No tile, mask or
per-tile output ever leaves a hospital.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.grid.grid import NodeInfo
from flwr.serverapp.strategy import Strategy
from flwr.supercore.run import Run
from torch import nn

from fedcl import seeds
from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES, TileDataset
from fedcl.errors import FedclError
from fedcl.evaluation import HospitalFigures, evaluate_hospital, evaluated_stages, round_evaluation
from fedcl.models import build_model
from fedcl.normalization import local_norm_keys
from fedcl.recorder import RoundCallback, RunRecorder, read_checkpoint, read_metrics
from fedcl.scenarios import (
    DATA_KEYS,
    held_out_dataset,
    is_drifted,
    stage_of,
    train_dataset,
)
from fedcl.strategies import build_strategy
from fedcl.strategies.replies import PARTITION_KEY, partition_of
from fedcl.training import resolve_device, train_local

FLOWER_ROUND_TIMEOUT = 3600.0  # Strategy.start's own default: an hour per round

# Context.state entries: the hospital's tiles (with what they were generated from) and
# the normalisation it keeps to itself (FedBN, SiloBN).
_TRAIN_KEY, _TEST_KEY, _NORM_KEY = "fedcl-train-data", "fedcl-test-data", "fedcl-local-norm"
# Message keys: a hospital's figures (a ConfigRecord: Flower's strategies aggregate the
# one MetricRecord of a reply), and the normalisation a strategy has hospitals keep.
EVALUATION_KEY, LOCAL_NORM_KEY = "evaluation", "local-norm"


def round_seed(seed: int, hospital: int, server_round: int) -> int:
    """Seed of one hospital's batch order in one round (independent streams)."""
    return int(seeds.stream(seed, seeds.BATCH_ORDER, hospital, server_round).generate_state(1)[0])


def _fingerprint(config: RunConfig, hospital: int, **what: Any) -> str:
    # What determines a set of a hospital's tiles; a change invalidates the cache.
    values = {k: config.to_mapping()[k] for k in DATA_KEYS} | {"hospital": hospital} | what
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _cached_tiles(
    state: RecordDict, name: str, fingerprint: str, build: Callable[[], TileDataset]
) -> TileDataset:
    """Tiles kept in ``state[name]`` while ``fingerprint`` holds; built otherwise."""
    cached = state.array_records.get(name)
    meta = state.config_records.get(f"{name}-meta")
    if cached is not None and meta is not None and meta.get("fingerprint") == fingerprint:
        return TileDataset(cached["images"].numpy(), cached["masks"].numpy(), NUM_CLASSES)
    data = build()
    state[name] = ArrayRecord({"images": Array(data.images), "masks": Array(data.masks)})
    state[f"{name}-meta"] = ConfigRecord({"fingerprint": fingerprint})
    return data


def local_train_data(
    config: RunConfig, hospital: int, server_round: int, state: RecordDict
) -> TileDataset:
    """Return the tiles the hospital trains on this round, kept in ``state``.

    Generated when first needed and again only when the stage or drift status
    changes; the previous stage's tiles are then gone, as in the scenario.
    """
    fingerprint = _fingerprint(
        config,
        hospital,
        stage=stage_of(config, server_round),
        drifted=is_drifted(config, hospital, server_round),
    )
    return _cached_tiles(
        state, _TRAIN_KEY, fingerprint, lambda: train_dataset(config, hospital, server_round)
    )


def local_test_sets(
    config: RunConfig, hospital: int, server_round: int, state: RecordDict
) -> dict[int, TileDataset]:
    """Return the hospital's test tiles of the stages the model after ``server_round`` needs.

    Kept in ``state`` per stage: a hospital keeps its test tiles of past stages (and
    is given those of the stages to come at each stage end), so that the stage x stage
    matrix can be filled without any tile leaving it.
    """
    return {
        stage: _cached_tiles(
            state,
            f"{_TEST_KEY}-{stage}",
            _fingerprint(config, hospital, stage=stage, split="test"),
            lambda stage=stage: held_out_dataset(config, hospital, stage),  # type: ignore[misc]
        )
        for stage in evaluated_stages(config, server_round)
    }


def _hospital(config: RunConfig, context: Context) -> int:
    hospital = int(context.node_config[PARTITION_KEY])
    if hospital >= config.clients:
        raise FedclError(
            f"this SuperNode has partition-id {hospital} but the run has clients="
            f"{config.clients}: start exactly one SuperNode per hospital "
            f"(num-supernodes = clients)"
        )
    return hospital


def _received_model(
    msg: Message, config: RunConfig, local_norm: str, state: RecordDict
) -> nn.Module:
    """Build the global model of ``msg`` with this hospital's own normalisation put back."""
    model = build_model(config.model, NUM_CLASSES)
    received = msg.content.array_records["arrays"].to_torch_state_dict()
    model.load_state_dict(with_local_norm(received, local_norm, state))
    return model.to(resolve_device(config.device))  # CUDA where this hospital has it (auto)


def with_local_norm(
    state_dict: dict[str, torch.Tensor], local_norm: str, state: RecordDict
) -> dict[str, torch.Tensor]:
    """Return ``state_dict`` with the normalisation this hospital kept (if any) in place."""
    kept = state.array_records.get(_NORM_KEY)
    if local_norm == "none" or kept is None:
        return state_dict
    return state_dict | kept.to_torch_state_dict()


def keep_local_norm(model: nn.Module, local_norm: str, state: RecordDict) -> None:
    """Keep the part of ``model``'s normalisation that ``local_norm`` names in ``state``."""
    keys = local_norm_keys(model, local_norm)
    if keys:
        values = model.state_dict()
        state[_NORM_KEY] = ArrayRecord({k: values[k].detach().cpu() for k in keys})


def _evaluation(
    model: nn.Module, config: RunConfig, hospital: int, server_round: int, state: RecordDict
) -> ConfigRecord:
    """Score the model after ``server_round`` on the hospital's tiles; figures only."""
    test_sets = local_test_sets(config, hospital, server_round, state)
    figures = evaluate_hospital(model, test_sets, batch_size=config.batch_size)
    return ConfigRecord({"server-round": server_round, **figures.to_record()})


def handle_train(msg: Message, context: Context) -> Message:
    """Evaluate, then train the received global model on this hospital's data; reply.

    With ``evaluation = "hospitals"`` the reply carries, beside the weights, this
    hospital's figures for the model it received (the model after the previous round),
    so evaluation costs no message of its own; :func:`handle_evaluate` scores the last.
    """
    sent = msg.content.config_records["config"]
    config = RunConfig.from_mapping(sent, source="train message", strict=False)
    hospital = _hospital(config, context)
    server_round = int(sent["server-round"])  # type: ignore[arg-type]
    local_norm = str(sent.get(LOCAL_NORM_KEY, "none"))
    model = _received_model(msg, config, local_norm, context.state)
    content = RecordDict()
    if config.evaluation == "hospitals":
        content[EVALUATION_KEY] = _evaluation(
            model, config, hospital, server_round - 1, context.state
        )
    data = local_train_data(config, hospital, server_round, context.state)
    result = train_local(
        model,
        data,
        **config.local_schedule(),
        seed=round_seed(config.seed, hospital, server_round),
        proximal_mu=config.proximal_mu,  # what the strategy sent: > 0 only from FedProx
    )
    keep_local_norm(model, local_norm, context.state)
    content["arrays"] = ArrayRecord(model.cpu().state_dict())
    content["metrics"] = MetricRecord(
        {
            "train-loss": result.loss,
            "num-examples": result.num_examples,  # FedAvg weight: samples, not batches
            PARTITION_KEY: hospital,
        }
    )
    return Message(content=content, reply_to=msg)


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Score the received model (the run's last) on this hospital's test tiles; figures only."""
    sent = msg.content.config_records["config"]
    config = RunConfig.from_mapping(sent, source="evaluate message", strict=False)
    hospital = _hospital(config, context)
    local_norm = str(sent.get(LOCAL_NORM_KEY, "none"))
    model = _received_model(msg, config, local_norm, context.state)
    evaluation = _evaluation(model, config, hospital, int(sent["server-round"]), context.state)  # type: ignore[arg-type]
    content = RecordDict(
        {EVALUATION_KEY: evaluation, "metrics": MetricRecord({PARTITION_KEY: hospital})}
    )
    return Message(content=content, reply_to=msg)


def figures_in(replies: Iterable[Message], server_round: int) -> dict[int, HospitalFigures]:
    """``{hospital: figures}`` the replies carry for the model after ``server_round``."""
    figures = {}
    for reply in replies:
        hospital = partition_of(reply)
        if hospital is None:
            continue
        record = reply.content.config_records.get(EVALUATION_KEY)
        if record is not None and record.get("server-round") == server_round:
            figures[hospital] = HospitalFigures.from_record(record)
    return figures


def final_evaluation(
    grid: Grid, config: RunConfig, arrays: ArrayRecord, local_norm: str
) -> dict[int, HospitalFigures]:
    """Ask every hospital to score the run's final model (one evaluate message each)."""
    sent = config.to_mapping() | {"server-round": config.rounds, LOCAL_NORM_KEY: local_norm}
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(dict(sent))})
    messages = [
        Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=node)
        for node in grid.get_node_ids()
    ]
    replies = grid.send_and_receive(messages, timeout=config.round_timeout or FLOWER_ROUND_TIMEOUT)
    return figures_in(replies, config.rounds)


class RoundEnd:
    """What the server does after every round (and before the first): checkpoint, evaluate.

    Called by ``Strategy.start`` as its ``evaluate_fn``. With ``evaluation = "server"``
    it scores the global model on every hospital's test tiles itself (synthetic data:
    it regenerates them) and completes the round's record; with ``"hospitals"`` the
    record is completed when the hospitals' figures arrive (:func:`serve`). Either way
    it writes the checkpoint and remembers the latest global model.
    """

    def __init__(
        self, config: RunConfig, recorder: RunRecorder, strategy: Strategy, done: int = 0
    ) -> None:
        self.config = config
        self.recorder = recorder
        self.strategy = strategy
        self.done = done  # rounds a resumed run had completed: Flower counts from 1 again
        self.arrays: ArrayRecord | None = None
        self._model: nn.Module | None = None
        self._test_sets: dict[tuple[int, int], TileDataset] = {}

    def server_figures(self, server_round: int, arrays: ArrayRecord) -> dict[int, HospitalFigures]:
        """Every hospital's figures, computed here from regenerated test tiles."""
        if self._model is None:
            self._model = build_model(self.config.model, NUM_CLASSES)
            self._model.to(resolve_device(self.config.device))
        self._model.load_state_dict(arrays.to_torch_state_dict())
        figures = {}
        for h in range(self.config.clients):
            tests = {}
            for stage in evaluated_stages(self.config, server_round):
                if (h, stage) not in self._test_sets:
                    self._test_sets[h, stage] = held_out_dataset(self.config, h, stage)
                tests[stage] = self._test_sets[h, stage]
            figures[h] = evaluate_hospital(self._model, tests, batch_size=self.config.batch_size)
        return figures

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        """Handle the global model after ``server_round``."""
        self.arrays = arrays
        if self.done and server_round == 0:  # resumed: this is the checkpoint's model
            return None
        server_round += self.done
        if self.config.evaluation == "server":
            figures = self.server_figures(server_round, arrays)
            self.recorder.round_evaluated(
                server_round, round_evaluation(self.config, server_round, figures)
            )
        self.recorder.checkpoint(
            {
                "round": server_round,
                "model": arrays.to_torch_state_dict(),
                # cross-round strategy state (DBC: anchor, history); {} for stateless ones
                "strategy": getattr(self.strategy, "state_dict", dict)(),
                # fedcl's own randomness is seeded per use (fedcl.seeds); these cover
                # anything else drawing from the global generators (Flower's sampling).
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
            }
        )
        return None


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
    if checkpoint is not None:
        recorder.restore(checkpoint)

    def on_train(
        server_round: int,
        replies: list[Message],
        metrics: MetricRecord | None,
        report: dict[str, Any] | None,
    ) -> None:
        numbers = {k: float(v) for k, v in (metrics or {}).items() if isinstance(v, int | float)}
        recorder.train_aggregated(server_round, numbers, report)
        if config.evaluation == "hospitals":
            # the replies carry the hospitals' scores of the model they received
            record_figures(server_round - 1, figures_in(replies, server_round - 1))

    def record_figures(server_round: int, figures: dict[int, HospitalFigures]) -> None:
        if not recorder.records or recorder.records[-1]["round"] < server_round:
            recorder.round_evaluated(server_round, round_evaluation(config, server_round, figures))

    strategy = build_strategy(config, on_train, round_offset=done)
    local_norm = getattr(strategy, "local_norm", "none")
    if local_norm != "none" and config.evaluation == "server":
        raise FedclError(
            f"strategy {config.strategy!r} keeps normalisation at the hospitals "
            f"(local-norm {local_norm!r}): only they can evaluate it; use evaluation = "
            "'hospitals'"
        )
    round_end = RoundEnd(config, recorder, strategy, done)
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
    round_end.arrays = ArrayRecord(initial)
    if done < config.rounds:
        strategy.start(
            grid=grid,
            initial_arrays=round_end.arrays,
            num_rounds=config.rounds - done,
            timeout=config.round_timeout or FLOWER_ROUND_TIMEOUT,
            # The client applies the proximal-mu it receives: 0 unless the strategy
            # (FedProx and its subclasses) injects its own into the train config.
            train_config=ConfigRecord(dict(config.to_mapping() | {"proximal-mu": 0.0})),
            evaluate_fn=round_end,
        )
    evaluated = recorder.records and recorder.records[-1]["round"] == config.rounds
    if config.evaluation == "hospitals" and not evaluated:
        record_figures(config.rounds, final_evaluation(grid, config, round_end.arrays, local_norm))
    return recorder.finish()
