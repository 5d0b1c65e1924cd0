"""Aggregation strategies by name, all wrapped to aggregate replies in hospital order.

Every strategy fedcl runs is a Flower ``Strategy``. :func:`build_strategy` looks the
name up in :data:`STRATEGIES` and returns an instance of an :func:`ordered` subclass:
its ``aggregate_train`` sorts the replies by the ``partition-id`` each hospital
reports (Flower's reply order and node ids are not stable), so floating-point sums
happen in the same order and runs are reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp.strategy import FedAvg, Strategy

from fedcl.config import RunConfig
from fedcl.errors import unknown_name

PARTITION_KEY = "partition-id"

TrainHook = Callable[[int, list[Message], MetricRecord | None], None]


def _sampling(config: RunConfig) -> dict[str, Any]:
    # Every hospital every round; the server's own evaluation replaces federated
    # evaluation (fraction_evaluate=0 skips that round trip).
    return {
        "fraction_train": 1.0,
        "fraction_evaluate": 0.0,
        "min_train_nodes": 1,
        "min_available_nodes": config.clients,
    }


# name -> (Flower strategy class, constructor keyword arguments for a config)
STRATEGIES: dict[str, tuple[type[Strategy], Callable[[RunConfig], dict[str, Any]]]] = {
    "fedavg": (FedAvg, _sampling),
}


def check_strategy(name: str) -> None:
    """Raise a FedclError listing the known names if ``name`` is not one of them."""
    if name not in STRATEGIES:
        raise unknown_name("strategy", name, STRATEGIES)


def by_partition(replies: Iterable[Message]) -> list[Message]:
    """Sort replies by the hospital id in their metrics (errors last, stable)."""

    def key(msg: Message) -> tuple[int, int]:
        if msg.has_error():
            return (1, 0)
        for metrics in msg.content.metric_records.values():
            value = metrics.get(PARTITION_KEY)
            if isinstance(value, int | float):
                return (0, int(value))
        return (1, 0)

    return sorted(replies, key=key)


def ordered(cls: type[Strategy], on_train: TrainHook | None = None) -> type[Strategy]:
    """Subclass ``cls`` so that it aggregates replies sorted by hospital.

    ``on_train(round, sorted_replies, aggregated_metrics)`` is called after every
    aggregation (the run recorder's hook).
    """

    def aggregate_train(
        self: Any, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = by_partition(replies)
        arrays, metrics = cls.aggregate_train(self, server_round, replies)
        if on_train is not None:
            on_train(server_round, replies, metrics)
        return arrays, metrics

    return type(cls.__name__, (cls,), {"aggregate_train": aggregate_train})


def build_strategy(config: RunConfig, on_train: TrainHook | None = None) -> Strategy:
    """Instantiate ``config.strategy``, wrapped by :func:`ordered`."""
    check_strategy(config.strategy)
    cls, kwargs = STRATEGIES[config.strategy]
    return ordered(cls, on_train)(**kwargs(config))
