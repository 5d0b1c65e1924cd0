"""fedcl's hospital ClientApp, timed: each call's seconds and phases to ``$FEDCL_BENCH_TIMES``."""

import json
import os
import time
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedcl.hospital import MODS, handle_evaluate, handle_train
from fedcl.metrics import SECONDS_PREFIX

app = ClientApp(mods=MODS)  # as fedcl's own ClientApp


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Run fedcl's train handler; append its duration and round to the times file."""
    start = time.perf_counter()
    reply = handle_train(msg, context)
    seconds = time.perf_counter() - start
    metrics = reply.content.metric_records["metrics"]
    record = {
        "round": int(msg.content.config_records["config"]["server-round"]),
        "hospital": int(context.node_config["partition-id"]),
        "seconds": seconds,
        # the handler's own split (fedcl.metrics.SECONDS_PREFIX)
        **{
            k.removeprefix(SECONDS_PREFIX): v
            for k, v in metrics.items()
            if k.startswith(SECONDS_PREFIX)
        },
    }
    with Path(os.environ["FEDCL_BENCH_TIMES"]).open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    return reply


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Run fedcl's evaluate handler (the final model's score; not timed)."""
    return handle_evaluate(msg, context)
