"""The hospital ClientApp: scores and trains the global model on its own tiles.

Identity comes from ``context.node_config["partition-id"]`` (set by the simulation
engine, or by ``flower-supernode --node-config "partition-id=..."`` in deployment);
everything else comes with the server's message (see :mod:`fedcl.hospital`).
"""

import os

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedcl.flower_logs import drop_intended_flower_logs
from fedcl.hospital import MODS, handle_evaluate, handle_train

# `flwr run .`'s simulation runtime loads this module, then calls ray.init() without an
# address, which joins any cluster a `ray start` left on the machine and can wait on it
# for good; "local" makes it start its own. An address the user set wins; fedcl's own
# runs pass theirs explicitly.
os.environ.setdefault("RAY_ADDRESS", "local")
drop_intended_flower_logs()  # a simulated hospital's actor: its shutdown warning

# MODS: arrays packed on the wire (fedcl.transport); with FEDCL_AUDIT_DIR set, every
# message in and out is described there (fedcl.audit)
app = ClientApp(mods=MODS)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Score the received model, train it; reply with weights, figures and ids."""
    return handle_train(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Score the run's final model on this hospital's test tiles; reply with figures."""
    return handle_evaluate(msg, context)
