"""One array per record on the wire: fewer objects for Flower to move.

Flower 1.42 moves every ``Array`` of a message as an object of its own, each pulled or
pushed with a request of its own (at most as many at once as the machine has cores):
the U-Net's 82 arrays cost a deployed hospital seconds per message, each way. fedcl
packs every ``ArrayRecord`` of a message into a single ``Array`` before it leaves (the
server's grid, :class:`fedcl.federation.PromptGrid`; a hospital's reply,
:func:`pack_mod`) and unpacks it on arrival, byte for byte: strategies and hospital
halves only ever see the records as they were made. A message that arrives unpacked is
left as it is.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

PACKED = "fedcl-packed"  # the one key of a packed ArrayRecord, and its Array's stype
_LENGTH = struct.Struct("!Q")  # bytes of the JSON layout that leads the packed data


def pack(record: ArrayRecord) -> ArrayRecord:
    """Return ``record`` as one Array: its layout (names, dtypes, shapes), then the data."""
    layout = [[name, a.dtype, list(a.shape), a.stype, len(a.data)] for name, a in record.items()]
    head = json.dumps(layout).encode()
    data = b"".join([_LENGTH.pack(len(head)), head, *(a.data for a in record.values())])
    return ArrayRecord({PACKED: Array(dtype="uint8", shape=(len(data),), stype=PACKED, data=data)})


def unpack(record: ArrayRecord) -> ArrayRecord:
    """Return the record :func:`pack` packed, array for array; any other record as it is."""
    if list(record.keys()) != [PACKED] or record[PACKED].stype != PACKED:
        return record
    data = memoryview(record[PACKED].data)
    (length,) = _LENGTH.unpack_from(data)
    start = _LENGTH.size + length
    arrays = {}
    for name, dtype, shape, stype, size in json.loads(bytes(data[_LENGTH.size : start])):
        content = bytes(data[start : start + size])
        arrays[name] = Array(dtype=dtype, shape=tuple(shape), stype=stype, data=content)
        start += size
    return ArrayRecord(arrays)


def _each_record(content: RecordDict, change: Callable[[ArrayRecord], ArrayRecord]) -> RecordDict:
    return RecordDict(
        {
            name: change(record) if isinstance(record, ArrayRecord) else record
            for name, record in content.items()
        }
    )


def pack_message(msg: Message) -> Message:
    """Pack every ArrayRecord of ``msg`` in place (not an error message); return it."""
    if not msg.has_error():
        msg.content = _each_record(msg.content, pack)
    return msg


def unpack_message(msg: Message) -> Message:
    """Unpack every packed ArrayRecord of ``msg`` in place; return it."""
    if not msg.has_error():
        msg.content = _each_record(msg.content, unpack)
    return msg


def pack_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Unpack what arrives at a hospital's ClientApp, pack its reply (a Flower mod)."""
    return pack_message(call_next(unpack_message(msg), context))
