"""The hospital ClientApp: trains the global model on its own tiles.

Identity comes from ``context.node_config["partition-id"]`` (set by the simulation
engine, or by ``flower-supernode --node-config "partition-id=..."`` in deployment);
everything else comes with the server's message (see :mod:`fedcl.federation`).
"""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedcl.federation import handle_train

app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train locally and reply with the weights, ``num-examples`` and ``partition-id``."""
    return handle_train(msg, context)
