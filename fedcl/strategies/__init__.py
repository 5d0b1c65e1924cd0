"""Aggregation strategies by name, plug-ins, and reproducible reply order.

Built in: ``fedavg``, ``fedprox``, ``fedmedian``, ``fedtrimmedavg``, ``krum``,
``multikrum``, ``bulyan`` (Flower's own classes), ``fltrust``, ``dbc``, ``fedbn``,
``silobn`` and ``lwf`` (fedcl's).
A user's strategy plugs in as ``--strategy package.module:ClassName`` (any Flower
``Strategy`` subclass) or by name through the entry-point group ``fedcl.strategies``.

Every strategy is instantiated through :func:`build_strategy` inside a
:class:`~fedcl.strategies.guard.GuardedStrategy`: it sorts, screens and counts the
replies, keeps the global model sent out, and records every round.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from flwr.app import ArrayRecord
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
from fedcl.strategies.guard import GuardedStrategy, ReplyGuard, SentModel, TrainHook
from fedcl.strategies.lwf import LwF
from fedcl.strategies.replies import by_partition
from fedcl.training import resolve_device, train_local


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
    return {k: v for k, v in sampling(config).items() if _takes(cls, k)}


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


def build_strategy(
    config: RunConfig, on_train: TrainHook | None = None, round_offset: int = 0
) -> GuardedStrategy:
    """Instantiate ``config.strategy`` inside a :class:`GuardedStrategy` with the config's guard.

    A strategy whose constructor takes ``sent`` is given the guard's :class:`SentModel`
    (the global model of the round).
    """
    cls, kwargs = resolve_strategy(config.strategy)
    guard = ReplyGuard(
        template=ArrayRecord(build_model(config.model, NUM_CLASSES).state_dict()),
        min_replies=config.min_replies,
        max_update_ratio=config.max_update_ratio,
        hospitals=config.clients,
    )
    sent = SentModel()
    arguments = kwargs(config) | ({"sent": sent} if _takes(cls, "sent") else {})
    return GuardedStrategy(
        cls(**arguments), guard=guard, sent=sent, on_train=on_train, round_offset=round_offset
    )


def _takes(cls: type, name: str) -> bool:
    try:
        return name in inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False


__all__ = [
    "STRATEGIES",
    "GuardedStrategy",
    "ReplyGuard",
    "SentModel",
    "DynamicBarlowContinuity",
    "FLTrust",
    "FedBN",
    "LwF",
    "SiloBN",
    "build_strategy",
    "by_partition",
    "check_strategy",
    "resolve_strategy",
]
