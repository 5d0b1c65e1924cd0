"""Pure checks on client replies: whose they are, and whether they are well formed."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, Message, RecordDict

PARTITION_KEY = "partition-id"
# the received model's loss on a hospital's first batches (fedcl.training.TrainResult)
FIRST_LOSS_KEY = "first-loss"


def reported(msg: Message, key: str) -> float | None:
    """Return the number a reply reported under ``key`` in its metrics (None if none)."""
    if msg.has_error():
        return None
    for metrics in msg.content.metric_records.values():
        value = metrics.get(key)
        if isinstance(value, int | float):
            return value
    return None


def partition_of(msg: Message) -> int | None:
    """Return the ``partition-id`` a hospital reported in its metrics (None if absent)."""
    value = reported(msg, PARTITION_KEY)
    return None if value is None else int(value)


def first_loss(replies: Iterable[Message], key: str = FIRST_LOSS_KEY) -> float | None:
    """Return the mean ``first-loss`` the replies reported (None if none reported one).

    A reply's own word: anything but a finite, non-negative number is left out.
    """
    values = (reported(msg, key) for msg in replies)
    found = [float(v) for v in values if v is not None and math.isfinite(v) and v >= 0]
    return sum(found) / len(found) if found else None


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
    global_values: Mapping[str, np.ndarray] | None = None,
    max_update_ratio: float = float("inf"),
) -> str | None:
    """Why a training reply cannot be aggregated, or None if it can.

    Checks, against ``reference`` (the architecture's state, or the global model that
    was sent out): one ArrayRecord under ``arrayrecord_key`` with the same keys, shapes
    and dtypes; every value finite; a positive ``weight_key`` in its metrics; and, with
    ``global_values`` (the global model as numpy arrays), an update norm
    ``||w - global||`` of at most ``max_update_ratio`` times ``||global||``
    (floating-point arrays only). Each array is deserialized once.
    """
    arrays = content.array_records.get(arrayrecord_key)
    if arrays is None:
        return f"no ArrayRecord {arrayrecord_key!r}"
    missing = sorted(set(reference) - set(arrays))
    extra = sorted(set(arrays) - set(reference))
    if missing or extra:
        return f"keys differ from the global model (missing {missing[:3]}, extra {extra[:3]})"
    values: dict[str, np.ndarray] = {}
    for name, expected in reference.items():
        got = arrays[name]
        if list(got.shape) != list(expected.shape):
            return f"{name}: shape {list(got.shape)}, expected {list(expected.shape)}"
        if got.dtype != expected.dtype:
            return f"{name}: dtype {got.dtype}, expected {expected.dtype}"
        values[name] = got.numpy()
        if np.issubdtype(values[name].dtype, np.floating) and not np.isfinite(values[name]).all():
            return f"{name}: non-finite values"
    weights = [m.get(weight_key) for m in content.metric_records.values()]
    if not any(isinstance(w, int | float) and w > 0 for w in weights):
        return f"no positive {weight_key!r} in its metrics"
    if global_values is not None:
        ratio = update_ratio(values, global_values)
        if ratio > max_update_ratio:
            return f"update norm {ratio:.3g} x the global model's, limit {max_update_ratio:g}"
    return None


def screen(
    replies: Iterable[Message],
    reference: ArrayRecord,
    global_arrays: ArrayRecord | None = None,
    max_update_ratio: float = float("inf"),
) -> tuple[list[Message], list[dict[str, Any]]]:
    """Split replies into usable ones and dropped ones (with the hospital and reason).

    A reply is dropped when it is an error (the hospital's training raised) or when
    :func:`malformed_reason` finds it malformed against ``reference`` (and, with
    ``global_arrays``, its update norm too large).
    """
    global_values = None
    if global_arrays is not None:
        global_values = {k: a.numpy() for k, a in global_arrays.items()}
    usable: list[Message] = []
    dropped: list[dict[str, Any]] = []
    for msg in replies:
        if msg.has_error():
            error = f"error on the hospital: {msg.error.reason}"
            dropped.append({"hospital": None, "node": msg.metadata.src_node_id, "reason": error})
            continue
        reason = malformed_reason(
            msg.content,
            reference,
            global_values=global_values,
            max_update_ratio=max_update_ratio,
        )
        if reason is None:
            usable.append(msg)
        else:
            dropped.append({"hospital": partition_of(msg), "reason": reason})
    return usable, dropped


def update_ratio(
    values: Mapping[str, np.ndarray], global_values: Mapping[str, np.ndarray]
) -> float:
    """Return ``||w - g|| / ||g||`` over the floating-point arrays (``g``: global model)."""
    diff, norm = 0.0, 0.0
    for name, g in global_values.items():
        if not np.issubdtype(g.dtype, np.floating) or name not in values:
            continue
        base = g.astype(np.float64)
        diff += float(np.sum((values[name].astype(np.float64) - base) ** 2))
        norm += float(np.sum(base**2))
    return float(np.sqrt(diff) / max(np.sqrt(norm), 1e-12))


def restore_dtypes(arrays: ArrayRecord, reference: ArrayRecord) -> ArrayRecord:
    """Cast aggregated ``arrays`` back to ``reference``'s dtypes.

    Flower's weighted average turns integer buffers (BatchNorm's
    ``num_batches_tracked``) into floats, which the next round's check would reject.
    """
    restored = {}
    for name, array in arrays.items():
        values = array.numpy()
        if name in reference and values.dtype != reference[name].numpy().dtype:
            values = values.astype(reference[name].numpy().dtype)
        restored[name] = Array(values)
    return ArrayRecord(restored)
