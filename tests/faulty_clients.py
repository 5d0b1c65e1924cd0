"""A hospital ClientApp for tests: fedcl's own, plus a failure and a message log.

Environment (inherited by Ray's actor processes):
``FEDCL_TEST_FAIL`` = ``"hospital:round"``: that hospital raises in that round;
``FEDCL_TEST_SLOW`` = ``"hospital:round:seconds"``: that hospital sleeps first;
``FEDCL_TEST_MESSAGES`` = a directory: every reply's content is described there as JSON.
"""

import json
import os
import time
import uuid
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedcl.federation import handle_train

app = ClientApp()


def describe(msg: Message) -> dict:
    """Everything a reply carries, by record type (arrays: name, shape, dtype)."""
    content = msg.content
    return {
        "arrays": {
            name: {k: [list(a.shape), a.dtype] for k, a in record.items()}
            for name, record in content.array_records.items()
        },
        "metrics": {name: dict(record) for name, record in content.metric_records.items()},
        "configs": {name: dict(record) for name, record in content.config_records.items()},
    }


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Fail where told to; otherwise train as fedcl's ClientApp and log the reply."""
    hospital = int(context.node_config["partition-id"])
    server_round = int(msg.content.config_records["config"]["server-round"])
    if os.environ.get("FEDCL_TEST_FAIL") == f"{hospital}:{server_round}":
        raise RuntimeError(f"hospital {hospital} failed in round {server_round} (test)")
    slow = os.environ.get("FEDCL_TEST_SLOW", "").split(":")
    if slow[:2] == [str(hospital), str(server_round)]:
        time.sleep(float(slow[2]))
    reply = handle_train(msg, context)
    log_dir = os.environ.get("FEDCL_TEST_MESSAGES")
    if log_dir:
        path = Path(log_dir) / f"{hospital}-{server_round}-{uuid.uuid4().hex}.json"
        path.write_text(json.dumps(describe(reply)))
    return reply
