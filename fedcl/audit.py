"""An audit log of what a hospital receives and sends (a Flower ClientApp mod).

With ``FEDCL_AUDIT_DIR`` set in a hospital's environment, every message its ClientApp
handles and every reply it sends is described in that directory as one JSON file,
``<hospital>-<round>-<in|out>-<kind>-<id>.json``: the names, shapes and dtypes of its
arrays and the values of its metrics and configs (never the arrays' values). It is how
a hospital (and fedcl's tests) can check that no tile, mask or per-tile output leaves
it. Unset, the mod does nothing.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable

AUDIT_ENV = "FEDCL_AUDIT_DIR"


def describe(msg: Message) -> dict[str, Any]:
    """Everything a message carries, by record type (arrays: name -> [shape, dtype])."""
    content = msg.content
    return {
        "arrays": {
            name: {k: [list(a.shape), a.dtype] for k, a in record.items()}
            for name, record in content.array_records.items()
        },
        "metrics": {name: dict(record) for name, record in content.metric_records.items()},
        "configs": {name: dict(record) for name, record in content.config_records.items()},
    }


def audit_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Describe ``msg`` and its reply in ``$FEDCL_AUDIT_DIR`` (if set); return the reply."""
    reply = call_next(msg, context)
    directory = os.environ.get(AUDIT_ENV)
    if directory:
        config = msg.content.config_records.get("config")
        server_round = config.get("server-round", "-") if config is not None else "-"
        hospital = context.node_config.get("partition-id", "-")
        kind = msg.metadata.message_type.split(".")[0]
        for direction, described in (("in", msg), ("out", reply)):
            name = f"{hospital!s}-{server_round!s}-{direction}-{kind}-{uuid.uuid4().hex}.json"
            (Path(directory) / name).write_text(json.dumps(describe(described)))
    return reply
