"""Aggregation strategies by name, plug-ins, and reproducible reply order.

Built in: ``fedavg``, ``fedprox``, ``fedmedian``, ``fedtrimmedavg``, ``krum``,
``multikrum``, ``bulyan`` (Flower's own classes), ``fltrust``, ``dbc``, ``fedbn``,
``silobn`` and ``lwf`` (fedcl's).
A user's strategy plugs in as ``--strategy package.module:ClassName`` (any Flower
``Strategy`` subclass) or by name through the entry-point group ``fedcl.strategies``.

Every strategy is instantiated through :func:`build_strategy` as a subclass made by
:func:`ordered`: its ``aggregate_train`` sorts the replies by the ``partition-id`` each
hospital reports (Flower's reply order and node ids are not stable), so floating-point
sums happen in the same order and runs are reproducible; then a hook records the
round's aggregated metrics and the strategy's ``round_report`` (if it has one).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.common.logger import log
from flwr.serverapp.strategy import (
    Bulyan,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    MultiKrum,
    Strategy,
)
from torch import nn

from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES, reference_images, root_dataset
from fedcl.data.dataset import images_to_tensor
from fedcl.errors import FedclError
from fedcl.models import build_model
from fedcl.plugins import STRATEGIES as NAMES
from fedcl.scenarios import scenario_of
from fedcl.strategies.dbc import DynamicBarlowContinuity
from fedcl.strategies.fedbn import FedBN, SiloBN
from fedcl.strategies.fltrust import FLTrust
from fedcl.strategies.lwf import LwF
from fedcl.strategies.replies import by_partition, partition_of, restore_dtypes, screen
from fedcl.training import resolve_device, train_local

# round, every reply sorted (dropped ones too), aggregated metrics, the strategy's
# round_report (or None)
TrainHook = Callable[[int, list[Message], MetricRecord | None, dict[str, Any] | None], None]


def sampling(config: RunConfig) -> dict[str, Any]:
    """FedAvg-family sampling: every hospital every round, no federated evaluation round.

    ``fraction_evaluate=0``: Flower's evaluation round trip is not needed, as the
    hospitals send their scores of the model they receive with their training replies
    (:mod:`fedcl.hospital`).
    """
    return {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_train_nodes": 1,
        "min_available_nodes": config.clients,
    }


def byzantine(config: RunConfig, per_node: int) -> int:
    """Assumed malicious hospitals: ``byzantine``, or the most the rule tolerates.

    Krum needs ``n >= 2f + 3`` (``per_node=2``), Bulyan ``n >= 4f + 3`` (``per_node=4``).
    """
    if config.byzantine >= 0:
        return config.byzantine
    return max(0, (config.clients - 3) // per_node)


def _model_fn(config: RunConfig) -> Callable[[], nn.Module]:
    return lambda: build_model(config.model, NUM_CLASSES)


def _reference_tensor(config: RunConfig) -> torch.Tensor:
    return images_to_tensor(reference_images(config))


def _fltrust(config: RunConfig) -> dict[str, Any]:
    root = root_dataset(config)

    def server_train(model: nn.Module) -> None:
        train_local(model, root, **config.local_schedule(), seed=config.seed)

    return sampling(config) | {
        "model_fn": _model_fn(config),
        "server_train": server_train,
        "device": resolve_device(config.device),
    }


def _dbc(config: RunConfig) -> dict[str, Any]:
    return sampling(config) | {
        "reference_images": _reference_tensor(config),
        "model_fn": _model_fn(config),
        "settings": config.dbc,
        "seed": config.seed,
        "device": resolve_device(config.device),
        "drifted": lambda hospital, server_round: (
            isinstance(hospital, int) and scenario_of(config).is_drifted(hospital, server_round)
        ),
    }


def _lwf(config: RunConfig) -> dict[str, Any]:
    return {
        "distill_weight": config.lwf.weight,
        "temperature": config.lwf.temperature,
        "stage_of": scenario_of(config).stage_of,
    }


# name -> (strategy class, constructor keyword arguments for a config)
STRATEGIES: dict[str, tuple[type[Strategy], Callable[[RunConfig], dict[str, Any]]]] = {
    "fedavg": (FedAvg, sampling),
    "fedprox": (FedProx, lambda c: sampling(c) | {"proximal_mu": c.proximal_mu}),
    "fedmedian": (FedMedian, sampling),
    "fedtrimmedavg": (FedTrimmedAvg, lambda c: sampling(c) | {"beta": 0.2}),
    "krum": (Krum, lambda c: sampling(c) | {"num_malicious_nodes": byzantine(c, 2)}),
    "multikrum": (
        MultiKrum,
        lambda c: (
            sampling(c)
            | {
                "num_malicious_nodes": byzantine(c, 2),
                "num_nodes_to_select": max(1, c.clients - byzantine(c, 2)),
            }
        ),
    ),
    "bulyan": (Bulyan, lambda c: sampling(c) | {"num_malicious_nodes": byzantine(c, 4)}),
    "fltrust": (FLTrust, _fltrust),
    "dbc": (DynamicBarlowContinuity, _dbc),
    "fedbn": (FedBN, sampling),
    "silobn": (SiloBN, sampling),
    "lwf": (LwF, lambda c: sampling(c) | _lwf(c)),
}


def _plugin_kwargs(cls: type[Strategy], config: RunConfig) -> dict[str, Any]:
    """Pass fedcl's sampling settings to a plug-in where its constructor takes them."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in sampling(config).items() if k in params}


def _checked(cls: Any, origin: str) -> type[Strategy]:
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        from flwr.server.strategy import Strategy as LegacyStrategy

        hint = ""
        if inspect.isclass(cls) and issubclass(cls, LegacyStrategy):
            hint = (
                " (it subclasses the legacy flwr.server.strategy API; fedcl runs Flower's "
                "Message API: subclass flwr.serverapp.strategy.FedAvg or Strategy and "
                "override aggregate_train)"
            )
        raise FedclError(f"strategy {origin!r} is not a flwr Strategy subclass: {cls!r}{hint}")
    return cls


def resolve_strategy(name: str) -> tuple[type[Strategy], Callable[[RunConfig], dict[str, Any]]]:
    """Class and constructor arguments for a built-in, entry-point or dotted name.

    Raises
    ------
    FedclError
        For an unknown name (listing the known ones) or a plug-in that cannot be
        imported or is not a Flower ``Strategy``.
    """
    if name in STRATEGIES:
        return STRATEGIES[name]
    cls = _checked(NAMES.load(name), name)  # an unknown name: the error, did-you-mean
    return cls, lambda config: _plugin_kwargs(cls, config)


def check_strategy(name: str) -> None:
    """Raise a FedclError if ``name`` does not resolve to a strategy."""
    resolve_strategy(name)


@dataclass(frozen=True)
class ReplyGuard:
    """What every strategy's replies must satisfy before they reach its aggregation.

    ``template``: the architecture's state (keys, shapes, dtypes; None: the global model
    sent out); ``min_replies``: fewer usable replies and the round keeps the global
    model; ``max_update_ratio``: the largest ``||w - global|| / ||global||`` accepted;
    ``hospitals``: how many there are (0: unknown).
    """

    template: ArrayRecord | None = None
    min_replies: int = 1
    max_update_ratio: float = float("inf")
    hospitals: int = 0  # > 0: report hospitals that sent nothing (timed out) as missing


def ordered(
    cls: type[Strategy],
    on_train: TrainHook | None = None,
    guard: ReplyGuard | None = None,
    round_offset: int = 0,
) -> type[Strategy]:
    """Subclass ``cls`` so that it aggregates usable replies only, sorted by hospital.

    Error replies (a hospital whose training raised) and malformed or hostile ones
    (NaN/Inf, wrong keys, shapes or dtypes, no ``num-examples``, an update norm above
    ``guard.max_update_ratio``) are dropped before ``cls`` sees them and reported as
    ``dropped`` in the round's report; the aggregate is cast back to the template's
    dtypes. ``on_train(round, replies, aggregated_metrics, round_report)`` (every reply,
    sorted, the dropped ones too: what they carry besides the update, a hospital's
    evaluation, is still good) is called after every aggregation (the run recorder's
    hook). ``round_offset`` is added
    to Flower's round numbers (a resumed run: Flower counts from 1 again), so hospitals
    and the strategy see the run's own round.
    """
    guard = guard or ReplyGuard()

    def configure_train(
        self: Any, server_round: int, arrays: ArrayRecord, config: Any, grid: Any
    ) -> Iterable[Message]:
        self._fedcl_global = arrays  # what this round's replies are checked against
        return cls.configure_train(self, server_round + round_offset, arrays, config, grid)

    def aggregate_train(
        self: Any, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        server_round += round_offset
        replies = by_partition(replies)
        sent = getattr(self, "_fedcl_global", None)
        reference = guard.template if guard.template is not None else sent
        if reference is None:  # called without configure_train (unit tests)
            usable, dropped = replies, list[dict[str, Any]]()
        else:
            usable, dropped = screen(replies, reference, sent, guard.max_update_ratio)
        for item in dropped:
            hospital, reason = item["hospital"], item["reason"]
            log(logging.WARNING, "round %d: dropped %s: %s", server_round, hospital, reason)
        arrays: ArrayRecord | None = None
        metrics: MetricRecord | None = None
        report: dict[str, Any] | None = None
        if len(usable) >= guard.min_replies:
            arrays, metrics = cls.aggregate_train(self, server_round, usable)
            report = getattr(self, "round_report", None)
        else:
            message = "round %d: %d usable replies < min-replies %d: global model kept"
            log(logging.WARNING, message, server_round, len(usable), guard.min_replies)
            report = {"skipped": f"{len(usable)} usable replies < min-replies"}
        if arrays is not None and reference is not None:
            arrays = restore_dtypes(arrays, reference)
        if dropped:
            report = dict(report or {}) | {"dropped": dropped}
        heard = {partition_of(m) for m in replies} | {d["hospital"] for d in dropped}
        missing = [h for h in range(guard.hospitals) if h not in heard]
        if missing and not any(d["hospital"] is None for d in dropped):  # errors are anonymous
            log(logging.WARNING, "round %d: no reply from hospitals %s", server_round, missing)
            report = dict(report or {}) | {"missing": missing}
        if on_train is not None:
            on_train(server_round, replies, metrics, report)
        return arrays, metrics

    body = {"aggregate_train": aggregate_train, "configure_train": configure_train}
    return type(cls.__name__, (cls,), body)


def build_strategy(
    config: RunConfig, on_train: TrainHook | None = None, round_offset: int = 0
) -> Strategy:
    """Instantiate ``config.strategy``, wrapped by :func:`ordered` with the config's guard."""
    cls, kwargs = resolve_strategy(config.strategy)
    guard = ReplyGuard(
        template=ArrayRecord(build_model(config.model, NUM_CLASSES).state_dict()),
        min_replies=config.min_replies,
        max_update_ratio=config.max_update_ratio,
        hospitals=config.clients,
    )
    return ordered(cls, on_train, guard, round_offset)(**kwargs(config))


__all__ = [
    "STRATEGIES",
    "ReplyGuard",
    "DynamicBarlowContinuity",
    "FLTrust",
    "FedBN",
    "LwF",
    "SiloBN",
    "build_strategy",
    "by_partition",
    "check_strategy",
    "ordered",
    "resolve_strategy",
]
