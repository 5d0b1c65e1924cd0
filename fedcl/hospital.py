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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch import nn

from fedcl import seeds
from fedcl.config import RunConfig, data_keys
from fedcl.data import NUM_CLASSES, TileDataset
from fedcl.distillation import Distillation
from fedcl.errors import FedclError
from fedcl.evaluation import evaluate_hospital, evaluated_stages
from fedcl.models import build_model
from fedcl.normalization import local_norm_keys
from fedcl.scenarios import scenario_of
from fedcl.strategies.lwf import TEACHER_KEY, TEMPERATURE_KEY, WEIGHT_KEY
from fedcl.strategies.replies import PARTITION_KEY
from fedcl.training import Penalty, device_of, resolve_device, train_local

# Context.state entries: the hospital's tiles (with what they were generated from), the
# normalisation it keeps to itself (FedBN, SiloBN) and LwF's teacher.
_TRAIN_KEY, _TEST_KEY, _NORM_KEY = "fedcl-train-data", "fedcl-test-data", "fedcl-local-norm"
_TEACHER_KEY = "fedcl-teacher"
# Message keys: a hospital's figures (a ConfigRecord: Flower's strategies aggregate the
# one MetricRecord of a reply), and the normalisation a strategy has hospitals keep.
EVALUATION_KEY, LOCAL_NORM_KEY = "evaluation", "local-norm"


def round_seed(seed: int, hospital: int, server_round: int) -> int:
    """Seed of one hospital's batch order in one round (independent streams)."""
    return int(seeds.stream(seed, seeds.BATCH_ORDER, hospital, server_round).generate_state(1)[0])


def _fingerprint(config: RunConfig, hospital: int, **what: Any) -> str:
    # What determines a set of a hospital's tiles; a change invalidates the cache.
    values = {k: config.to_mapping()[k] for k in data_keys()} | {"hospital": hospital} | what
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
    scenario = scenario_of(config)
    fingerprint = _fingerprint(
        config,
        hospital,
        stage=scenario.stage_of(server_round),
        drifted=scenario.is_drifted(hospital, server_round),
    )
    return _cached_tiles(
        state, _TRAIN_KEY, fingerprint, lambda: scenario.train_dataset(hospital, server_round)
    )


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
            f"{_TEST_KEY}-{stage}",
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


@dataclass(frozen=True)
class _Received:
    """What a message from the server tells a hospital."""

    config: RunConfig
    hospital: int
    server_round: int
    local_norm: str  # what the strategy has hospitals keep local (fedcl.normalization)
    model: nn.Module  # the global model, with this hospital's own normalisation put back
    distill: tuple[float, float]  # LwF's weight and temperature (weight 0: no LwF)
    teacher: ArrayRecord | None = None  # LwF's teacher, sent by the server after a resume


def _receive(msg: Message, context: Context) -> _Received:
    sent = msg.content.config_records["config"]
    config = RunConfig.from_mapping(
        sent, source=f"{msg.metadata.message_type} message", strict=False
    )
    local_norm = str(sent.get(LOCAL_NORM_KEY, "none"))
    model = build_model(config.model, NUM_CLASSES)
    received = msg.content.array_records["arrays"].to_torch_state_dict()
    model.load_state_dict(with_local_norm(received, local_norm, context.state))
    return _Received(
        config=config,
        hospital=_hospital(config, context),
        server_round=int(sent["server-round"]),  # type: ignore[arg-type]
        local_norm=local_norm,
        model=model.to(resolve_device(config.device)),  # CUDA where it has it (auto)
        distill=(float(sent.get(WEIGHT_KEY, 0.0)), float(sent.get(TEMPERATURE_KEY, 1.0))),  # type: ignore[arg-type]
        teacher=msg.content.array_records.get(TEACHER_KEY),
    )


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


def penalties(got: _Received, state: RecordDict) -> list[Penalty]:
    """Extra terms of this hospital's loss: LwF's distillation when the strategy asks for it.

    The teacher of a stage is the first global model the hospital receives in it, kept
    in ``state``; in the first stage there is none.
    """
    weight, temperature = got.distill
    stage = scenario_of(got.config).stage_of(got.server_round)
    if weight == 0 or stage == 0:
        return []
    meta = state.config_records.get(f"{_TEACHER_KEY}-meta")
    teacher_arrays = got.teacher  # the server's copy, after a resume
    if teacher_arrays is None and (meta is None or meta.get("stage") != stage):
        teacher_arrays = ArrayRecord(
            {k: v.detach().cpu() for k, v in got.model.state_dict().items()}
        )
    if teacher_arrays is not None:
        state[_TEACHER_KEY] = teacher_arrays
        state[f"{_TEACHER_KEY}-meta"] = ConfigRecord({"stage": stage})
    teacher = build_model(got.config.model, NUM_CLASSES)
    teacher.load_state_dict(state.array_records[_TEACHER_KEY].to_torch_state_dict())
    teacher.to(device_of(got.model))
    return [Distillation(teacher, weight=weight, temperature=temperature)]


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
    got, state = _receive(msg, context), context.state
    content = RecordDict()
    if got.config.evaluation == "hospitals":
        content[EVALUATION_KEY] = _evaluation(
            got.model, got.config, got.hospital, got.server_round - 1, state
        )
    result = train_local(
        got.model,
        local_train_data(got.config, got.hospital, got.server_round, state),
        **got.config.local_schedule(),
        seed=round_seed(got.config.seed, got.hospital, got.server_round),
        proximal_mu=got.config.proximal_mu,  # what the strategy sent: > 0 only from FedProx
        penalties=penalties(got, state),
    )
    keep_local_norm(got.model, got.local_norm, state)
    content["arrays"] = ArrayRecord(got.model.cpu().state_dict())
    content["metrics"] = MetricRecord(
        {
            "train-loss": result.loss,
            "num-examples": result.num_examples,  # FedAvg weight: samples, not batches
            PARTITION_KEY: got.hospital,
        }
    )
    return Message(content=content, reply_to=msg)


def handle_evaluate(msg: Message, context: Context) -> Message:
    """Score the received model (the run's last) on this hospital's test tiles; figures only."""
    got = _receive(msg, context)
    evaluation = _evaluation(got.model, got.config, got.hospital, got.server_round, context.state)
    metrics = MetricRecord({PARTITION_KEY: got.hospital})
    return Message(
        content=RecordDict({EVALUATION_KEY: evaluation, "metrics": metrics}), reply_to=msg
    )
