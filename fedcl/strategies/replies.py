"""Pure checks on client replies: whose they are, and whether they are well formed."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

PARTITION_KEY = "partition-id"


def partition_of(msg: Message) -> int | None:
    """Return the ``partition-id`` a hospital reported in its metrics (None if absent)."""
    if msg.has_error():
        return None
    for metrics in msg.content.metric_records.values():
        value = metrics.get(PARTITION_KEY)
        if isinstance(value, int | float):
            return int(value)
    return None


def by_partition(replies: Iterable[Message]) -> list[Message]:
    """Sort replies by hospital id (errors and anonymous replies last, stable)."""

    def key(msg: Message) -> tuple[int, int]:
        partition = partition_of(msg)
        return (1, 0) if partition is None else (0, partition)

    return sorted(replies, key=key)


def malformed_reason(
    content: RecordDict,
    reference: ArrayRecord,
    *,
    arrayrecord_key: str = "arrays",
    weight_key: str = "num-examples",
) -> str | None:
    """Why a training reply cannot be aggregated, or None if it can.

    Checks, against ``reference`` (the global model that was sent out): exactly one
    ArrayRecord under ``arrayrecord_key`` with the same keys, shapes and dtypes; every
    value finite; and a positive ``weight_key`` in its metrics.
    """
    arrays = content.array_records.get(arrayrecord_key)
    if arrays is None:
        return f"no ArrayRecord {arrayrecord_key!r}"
    missing = sorted(set(reference) - set(arrays))
    extra = sorted(set(arrays) - set(reference))
    if missing or extra:
        return f"keys differ from the global model (missing {missing[:3]}, extra {extra[:3]})"
    for name, expected in reference.items():
        got = arrays[name]
        if list(got.shape) != list(expected.shape):
            return f"{name}: shape {list(got.shape)}, expected {list(expected.shape)}"
        if got.dtype != expected.dtype:
            return f"{name}: dtype {got.dtype}, expected {expected.dtype}"
        values = got.numpy()
        if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
            return f"{name}: non-finite values"
    weights = [m.get(weight_key) for m in content.metric_records.values()]
    if not any(isinstance(w, int | float) and w > 0 for w in weights):
        return f"no positive {weight_key!r} in its metrics"
    return None


class RemembersGlobal(FedAvg):
    """A FedAvg whose ``aggregate_train`` needs the global model it sent out.

    ``configure_train`` keeps it; :meth:`global_arrays` returns it.
    """

    _global: ArrayRecord | None = None

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember ``arrays``, the global model this round's replies start from."""
        self._global = arrays
        return super().configure_train(server_round, arrays, config, grid)

    def global_arrays(self) -> ArrayRecord:
        """Return the global model of the current round (after ``configure_train``)."""
        if self._global is None:
            raise RuntimeError("aggregate_train called before configure_train")
        return self._global
