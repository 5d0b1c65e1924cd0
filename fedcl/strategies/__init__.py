"""Aggregation strategies by name, plug-ins, and reproducible reply order.

Built in: ``fedavg``, ``fedprox``, ``fedmedian``, ``fedtrimmedavg``, ``krum``,
``multikrum``, ``bulyan`` (Flower's own classes), ``fltrust`` and ``dbc`` (fedcl's).
A user's strategy plugs in as ``--strategy package.module:ClassName`` (any Flower
``Strategy`` subclass) or by name through the entry-point group ``fedcl.strategies``.

Every strategy is instantiated through :func:`build_strategy` as a subclass made by
:func:`ordered`: its ``aggregate_train`` sorts the replies by the ``partition-id`` each
hospital reports (Flower's reply order and node ids are not stable), so floating-point
sums happen in the same order and runs are reproducible; then a hook records the
round's aggregated metrics and the strategy's ``round_report`` (if it has one).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

import torch
from flwr.app import ArrayRecord, Message, MetricRecord
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
from fedcl.errors import FedclError, unknown_name
from fedcl.models import build_model
from fedcl.strategies.dbc import DynamicBarlowContinuity
from fedcl.strategies.fltrust import FLTrust
from fedcl.strategies.replies import by_partition
from fedcl.training import resolve_device, train_local

ENTRY_POINT_GROUP = "fedcl.strategies"

# round, sorted replies, aggregated metrics, the strategy's round_report (or None)
TrainHook = Callable[[int, list[Message], MetricRecord | None, dict[str, Any] | None], None]


def sampling(config: RunConfig) -> dict[str, Any]:
    """FedAvg-family sampling: every hospital every round, no federated evaluation.

    The server evaluates the global model on every hospital's test tiles itself, so
    ``fraction_evaluate=0`` skips the federated evaluation round trip.
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
}


def _plugin_kwargs(cls: type[Strategy], config: RunConfig) -> dict[str, Any]:
    """Pass fedcl's sampling settings to a plug-in where its constructor takes them."""
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in sampling(config).items() if k in params}


def _load_dotted(path: str) -> type[Strategy]:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise FedclError(
            f"strategy {path!r}: cannot import module {module_name!r} ({err})"
        ) from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise FedclError(f"strategy {path!r}: module {module_name!r} has no {attr!r}")
    return _checked(cls, path)


def _checked(cls: Any, origin: str) -> type[Strategy]:
    if not (inspect.isclass(cls) and issubclass(cls, Strategy)):
        raise FedclError(f"strategy {origin!r} is not a flwr Strategy subclass: {cls!r}")
    return cls


def plugin_names() -> dict[str, Any]:
    """Strategies registered by installed packages under ``fedcl.strategies``."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


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
    if ":" in name:
        cls = _load_dotted(name)
        return cls, lambda config: _plugin_kwargs(cls, config)
    plugins = plugin_names()
    if name in plugins:
        cls = _checked(plugins[name].load(), name)
        return cls, lambda config: _plugin_kwargs(cls, config)
    raise unknown_name("strategy", name, [*STRATEGIES, *plugins, "package.module:ClassName"])


def check_strategy(name: str) -> None:
    """Raise a FedclError if ``name`` does not resolve to a strategy."""
    resolve_strategy(name)


def ordered(cls: type[Strategy], on_train: TrainHook | None = None) -> type[Strategy]:
    """Subclass ``cls`` so that it aggregates replies sorted by hospital.

    ``on_train(round, sorted_replies, aggregated_metrics, round_report)`` is called
    after every aggregation (the run recorder's hook).
    """

    def aggregate_train(
        self: Any, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_partition(replies)
        arrays, metrics = cls.aggregate_train(self, server_round, replies)
        if on_train is not None:
            on_train(server_round, replies, metrics, getattr(self, "round_report", None))
        return arrays, metrics

    return type(cls.__name__, (cls,), {"aggregate_train": aggregate_train})


def build_strategy(config: RunConfig, on_train: TrainHook | None = None) -> Strategy:
    """Instantiate ``config.strategy``, wrapped by :func:`ordered`."""
    cls, kwargs = resolve_strategy(config.strategy)
    return ordered(cls, on_train)(**kwargs(config))


__all__ = [
    "STRATEGIES",
    "DynamicBarlowContinuity",
    "FLTrust",
    "build_strategy",
    "by_partition",
    "check_strategy",
    "ordered",
    "resolve_strategy",
]
