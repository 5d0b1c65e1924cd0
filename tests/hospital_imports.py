"""Run a hospital's ClientApp handlers for one strategy; print the fedcl modules it loaded.

``python -m tests.hospital_imports STRATEGY`` (a fresh interpreter, as a SuperNode's
ClientApp process is): a train message in the second stage of a tiny staged run (LwF's
teacher is built there), then the final evaluate message, through ``clients.app``'s own
handlers. Prints one module name per line (test_federation reads them).
"""

from __future__ import annotations

import sys

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.supercore.task_identity import TaskIdentity  # messages are built in a task

import clients.app  # noqa: F401 - what a SuperNode loads
from fedcl.configure import load_config
from fedcl.data import NUM_CLASSES
from fedcl.hospital import handle_evaluate, handle_train
from fedcl.models import build_model


def main(strategy: str) -> None:
    """Handle a train and an evaluate message of ``strategy``; print the modules loaded."""
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    torch.set_num_threads(1)
    config = load_config(
        {
            "strategy": strategy,
            "scenario": "catastrophic-forgetting",
            "stages": 2,
            "rounds-per-stage": 1,
            "clients": 2,
            "image-size": 32,
            "train-tiles": 4,
            "test-tiles": 2,
            "device": "cpu",
        }
    )
    arrays = ArrayRecord(build_model(config.model, NUM_CLASSES).state_dict())
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"partition-id": 0, "num-partitions": 2},
        state=RecordDict(),
        run_config={},
    )
    for kind, handle, server_round in (
        (MessageType.TRAIN, handle_train, 2),
        (MessageType.EVALUATE, handle_evaluate, 2),
    ):
        # the config as the server sends it, with the settings the strategy's server
        # half adds for its hospital half (LwF's, FedProx's)
        settings = {"distill-weight": 1.0, "distill-temperature": 2.0, "proximal-mu": 0.01}
        sent = ConfigRecord(config.to_mapping() | {"server-round": server_round} | settings)
        content = RecordDict({"arrays": arrays, "config": sent})
        handle(Message(content=content, message_type=kind, dst_node_id=1), context)
    print("\n".join(sorted(m for m in sys.modules if m.split(".")[0] in ("fedcl", "server"))))


if __name__ == "__main__":
    main(sys.argv[1])
