"""The hospital's side of a run: what its ClientApp (``clients/app.py``) does with a message.

The server sends the whole resolved :class:`~fedcl.config.RunConfig` in every message's
``config`` record, so a hospital needs nothing but its ``partition-id`` (from
``context.node_config``) to rebuild its data, model and schedule. Its tiles are
generated when first needed and kept in ``Context.state`` (Flower persists it per node
across rounds, in simulation and deployment); they are regenerated only when the
scenario changes the hospital's stage or drift status.

A hospital scores the model it receives on its own test tiles before it trains and
sends the figures with its update (``evaluation = "hospitals"``); an evaluate message
after the last round asks for the final model's. No tile, mask or per-tile output ever
leaves it: a reply holds the model's arrays and numbers (:mod:`fedcl.audit` can log
every message to check).

The round is the same for every strategy; what a strategy changes in it, its hospital
half (:mod:`fedcl.strategies.hospital_half`), is called at named moments. This module
names no strategy.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
from flwr.clientapp.typing import Mod
from torch import nn

from fedcl import seeds
from fedcl.audit import audit_mod
from fedcl.config import RunConfig, data_keys
from fedcl.configure import load_config
from fedcl.data import NUM_CLASSES, TileDataset
from fedcl.errors import FedclError
from fedcl.evaluation import evaluate_hospital, evaluated_stages, own_tiles_round
from fedcl.metrics import HOSPITAL_PHASES, MESSAGE_PHASES, SECONDS_PREFIX
from fedcl.models import build_model
from fedcl.plugins import STRATEGIES
from fedcl.processes import started_at
from fedcl.scenarios import scenario_of
from fedcl.scenarios.builtin import Builtin
from fedcl.strategies.contract import hospital_half_of
from fedcl.strategies.hospital_half import HospitalHalf, LocalRound
from fedcl.strategies.replies import FIRST_LOSS_KEY, PARTITION_KEY
from fedcl.training import resolve_device, train_local
from fedcl.transport import pack_mod, unpack_message

# Context.state entries: the hospital's tiles (with what they were generated from); the
# training tiles of this round and of the round before (the model of a stage's last
# round is evaluated, own statistics, in the next stage's first round).
_TRAIN_KEYS, _TEST_KEY = ("fedcl-train-data", "fedcl-train-data-before"), "fedcl-test-data"
# A hospital ClientApp's mods: messages arrive with each ArrayRecord packed into one Array
# and replies leave so (fedcl.transport); inside, with FEDCL_AUDIT_DIR set, every message
# in and out is described there as the hospital's code sees it (fedcl.audit).
MODS: list[Mod] = [pack_mod, audit_mod]
# Message key of a hospital's figures (a ConfigRecord: Flower's strategies aggregate the
# one MetricRecord of a reply).
EVALUATION_KEY = "evaluation"


def round_seed(seed: int, hospital: int, server_round: int) -> int:
    """Seed of one hospital's batch order in one round (independent streams)."""
    return int(seeds.stream(seed, seeds.BATCH_ORDER, hospital, server_round).generate_state(1)[0])


def _fingerprint(config: RunConfig, hospital: int, **what: Any) -> str:
    # What determines a set of a hospital's tiles; a change invalidates the cache.
    mapping = config.to_mapping()
    values = {k: mapping[k] for k in data_keys(config)} | {"hospital": hospital} | what
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _cached_tiles(
    state: RecordDict, names: tuple[str, ...], fingerprint: str, build: Callable[[], TileDataset]
) -> TileDataset:
    """Tiles kept in one of ``state[names]`` while ``fingerprint`` holds; built otherwise.

    Built tiles go into the first name; what it held moves to the next, and the last
    one's tiles are dropped.
    """
    for name in names:
        cached = state.array_records.get(name)
        meta = state.config_records.get(f"{name}-meta")
        if cached is not None and meta is not None and meta.get("fingerprint") == fingerprint:
            return TileDataset(cached["images"].numpy(), cached["masks"].numpy(), NUM_CLASSES)
    for older, newer in reversed(list(zip(names[1:], names[:-1], strict=True))):
        if newer in state.array_records:
            state[older] = state.array_records[newer]
            state[f"{older}-meta"] = state.config_records[f"{newer}-meta"]
    data = build()
    state[names[0]] = ArrayRecord({"images": Array(data.images), "masks": Array(data.masks)})
    state[f"{names[0]}-meta"] = ConfigRecord({"fingerprint": fingerprint})
    return data


def local_train_data(
    config: RunConfig,
    hospital: int,
    server_round: int,
    state: RecordDict,
    keep: str = "",
    classes: tuple[int, ...] | None = None,
) -> TileDataset:
    """Return the tiles the hospital trains on in ``server_round``, kept in ``state``.

    Generated when first needed and again only when the stage or drift status
    changes. The tiles of the previous stage are kept until its last model has been
    evaluated (the next round's message: :func:`handle_train`), then they are gone, as
    in the scenario. ``keep``: a name of their own to keep them under instead (a
    strategy that keeps old stages' tiles: the joint-training bound). ``classes``: the
    classes their masks annotate under the class shift, if not the stage's own (a
    built-in scenario's tiles only: :meth:`fedcl.scenarios.builtin.Builtin.train_dataset`).
    """
    scenario = scenario_of(config)
    what: dict[str, Any] = {} if classes is None else {"classes": list(classes)}
    fingerprint = _fingerprint(
        config,
        hospital,
        stage=scenario.stage_of(server_round),
        drifted=scenario.is_drifted(hospital, server_round),
        **what,
    )

    def build() -> TileDataset:
        if classes is None:
            return scenario.train_dataset(hospital, server_round)
        if not isinstance(scenario, Builtin):
            raise FedclError(f"scenario {config.scenario!r} cannot relabel its tiles")
        return scenario.train_dataset(hospital, server_round, classes)

    names = (f"{_TRAIN_KEYS[0]}-{keep}",) if keep else _TRAIN_KEYS
    return _cached_tiles(state, names, fingerprint, build)


def local_test_sets(
    config: RunConfig, hospital: int, server_round: int, state: RecordDict
) -> dict[int, TileDataset]:
    """Return the hospital's test tiles of the stages the model after ``server_round`` needs.

    Kept in ``state`` per stage: a hospital keeps its test tiles of past stages (and
    is given those of the stages to come at each stage end), so that the stage x stage
    matrix can be filled without any tile leaving it.
    """
    scenario = scenario_of(config)
    return {
        stage: _cached_tiles(
            state,
            (f"{_TEST_KEY}-{stage}",),
            _fingerprint(config, hospital, stage=stage, split="test"),
            lambda stage=stage: scenario.test_dataset(hospital, stage),  # type: ignore[misc]
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


def local_round(
    config: RunConfig,
    hospital: int,
    server_round: int,
    *,
    sent: ConfigRecord,
    content: RecordDict,
    state: RecordDict,
    training: bool,
) -> LocalRound:
    """Return what a hospital knows of a round, its tiles kept in ``state``.

    ``training``: a train message (it holds the model of the round before); else the
    final evaluate one (the model of ``server_round`` itself).
    """
    model_round = server_round - 1 if training else server_round

    def train_tiles(r: int, keep: str = "", classes: tuple[int, ...] | None = None) -> TileDataset:
        return local_train_data(config, hospital, r, state, keep, classes)

    return LocalRound(
        config=config,
        hospital=hospital,
        server_round=server_round,
        sent=sent,
        content=content,
        state=state,
        model_round=model_round,
        own_tiles=lambda: train_tiles(own_tiles_round(model_round)),
        train_tiles=train_tiles,
    )


@dataclass(frozen=True)
class _Received:
    """What a message from the server tells a hospital, and the strategy's half for it."""

    now: LocalRound
    model: nn.Module  # the global model, as the strategy's hospital half received it
    half: HospitalHalf

    @property
    def config(self) -> RunConfig:
        """The run's configuration."""
        return self.now.config


def _receive(msg: Message, context: Context) -> _Received:
    unpack_message(msg)  # without pack_mod (a ClientApp of one's own), packed as it came
    sent = msg.content.config_records["config"]
    config = load_config(sent, source=f"{msg.metadata.message_type} message", strict=False)
    now = local_round(
        config,
        _hospital(config, context),
        int(sent["server-round"]),  # type: ignore[arg-type]
        sent=sent,
        content=msg.content,
        state=context.state,
        training=msg.metadata.message_type == MessageType.TRAIN,
    )
    model = build_model(config.model, NUM_CLASSES)
    model.load_state_dict(msg.content.array_records["arrays"].to_torch_state_dict())
    model.to(resolve_device(config.device))  # CUDA where it has it (auto)
    half = hospital_half_of(STRATEGIES.load(config.strategy))(now)
    half.received(model)
    return _Received(now=now, model=model, half=half)


def _evaluation(now: LocalRound, model: nn.Module) -> ConfigRecord:
    """Score the received model (of ``now.model_round``) on the hospital's tiles: figures only."""
    test_sets = local_test_sets(now.config, now.hospital, now.model_round, now.state)
    figures = evaluate_hospital(model, test_sets, now.own_tiles(), batch_size=now.config.batch_size)
    return ConfigRecord({"server-round": now.model_round, **figures.to_record()})


def _waited(msg: Message, entered: float) -> tuple[float, float]:
    """Seconds from the server's creating ``msg`` to its handler, ``entered``: delivery, start.

    *start*: from the start of this ClientApp's process to the handler (interpreter,
    imports, Flower's set-up), where the process started after the message was made
    (deployment: one per message); 0 where it lived on (simulation). *delivery*: the
    rest. Across machines the delivery includes the difference of their clocks.
    """
    made = msg.metadata.created_at
    started = started_at()
    if started is None or started < made:
        return entered - made, 0.0
    return started - made, entered - started


def handle_train(msg: Message, context: Context) -> Message:
    """Evaluate, then train the received global model on this hospital's data; reply.

    With ``evaluation = "hospitals"`` the reply carries, beside the weights, this
    hospital's figures for the model it received (the model after the previous round),
    so evaluation costs no message of its own; :func:`handle_evaluate` scores the last.
    """
    waited = _waited(msg, time.time())
    started = time.perf_counter()
    got = _receive(msg, context)
    config, hospital, server_round = got.config, got.now.hospital, got.now.server_round
    content = RecordDict()
    received = time.perf_counter()
    if config.evaluation == "hospitals":
        content[EVALUATION_KEY] = _evaluation(got.now, got.model)
    evaluated = time.perf_counter()
    result = train_local(
        got.model,
        got.half.training_tiles(got.now.train_tiles(server_round)),
        **config.local_schedule(),
        seed=round_seed(config.seed, hospital, server_round),
        penalties=got.half.penalties(got.model),
        criterion=got.half.criterion(),
    )
    got.half.trained(got.model)
    trained = time.perf_counter()
    content["arrays"] = ArrayRecord(got.model.cpu().state_dict())
    content["metrics"] = MetricRecord(
        {
            "train-loss": result.loss,
            FIRST_LOSS_KEY: result.first_loss,  # how new this round's tiles are to the model
            "num-examples": result.num_examples,  # FedAvg weight: samples, not batches
            PARTITION_KEY: hospital,
            # where the handler's time went: receiving (model rebuilt and loaded, tiles
            # from state), evaluating, training with the hospital half's hooks; and the
            # message's way to it (FedAvg averages them over the hospitals)
            **{
                f"{SECONDS_PREFIX}{phase}": seconds
                for phase, seconds in zip(
                    HOSPITAL_PHASES + MESSAGE_PHASES[:2],
                    (received - started, evaluated - received, trained - evaluated, *waited),
                    strict=True,
                )
            },
        }
    )
    got.half.reply(content)
    return Message(content=content, reply_to=msg)


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Score the received model (the run's last) on this hospital's test tiles; figures only."""
    got = _receive(msg, context)
    evaluation = _evaluation(got.now, got.model)
    metrics = MetricRecord({PARTITION_KEY: got.now.hospital})
    return Message(
        content=RecordDict({EVALUATION_KEY: evaluation, "metrics": metrics}), reply_to=msg
    )
