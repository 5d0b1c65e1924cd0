"""Pure checks on client replies: whose they are, and whether they are well formed."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from flwr.app import ArrayRecord, Message, RecordDict

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
