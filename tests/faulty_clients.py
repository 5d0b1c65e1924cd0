"""A hospital ClientApp for tests: fedcl's own, plus a failure, with the audit log.

Environment (inherited by Ray's actor processes):
``FEDCL_TEST_FAIL`` = ``"hospital:round"``: that hospital raises in that round;
``FEDCL_TEST_SLOW`` = ``"hospital:round:seconds"``: that hospital sleeps first;
``FEDCL_AUDIT_DIR`` = a directory: every message in and out is described there
(:mod:`fedcl.audit`, as in fedcl's own ClientApp, whose mods it runs).
"""

import os
import time

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedcl.hospital import MODS, handle_evaluate, handle_train

app = ClientApp(mods=MODS)  # fedcl's: arrays packed on the wire, the audit log


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Fail where told to; otherwise train as fedcl's ClientApp."""
    hospital = int(context.node_config["partition-id"])
    server_round = int(msg.content.config_records["config"]["server-round"])
    if os.environ.get("FEDCL_TEST_FAIL") == f"{hospital}:{server_round}":
        raise RuntimeError(f"hospital {hospital} failed in round {server_round} (test)")
    slow = os.environ.get("FEDCL_TEST_SLOW", "").split(":")
    if slow[:2] == [str(hospital), str(server_round)]:
        time.sleep(float(slow[2]))
    return handle_train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the final model as fedcl's ClientApp does."""
    return handle_evaluate(msg, context)
