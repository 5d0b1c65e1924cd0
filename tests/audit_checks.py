"""Checks on a hospital's audit log (:mod:`fedcl.audit`), shared by the end-to-end tests."""

import json
from pathlib import Path

from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES
from fedcl.metrics import HOSPITAL_PHASES, MESSAGE_PHASES, SECONDS_PREFIX
from fedcl.models import build_model
from fedcl.strategies.dbc.hospital import ANNOTATED_KEY


def assert_messages_carry_no_data(messages: Path, config: RunConfig, trained: int) -> None:
    """Check a run's audit log: every message holds the model's arrays and numbers only.

    ``trained``: the training replies the run should have logged.
    """
    expected = {
        k: [list(v.shape), str(v.dtype).removeprefix("torch.")]
        for k, v in build_model(config.model, NUM_CLASSES).state_dict().items()
    }
    logged = {p.name: json.loads(p.read_text()) for p in messages.glob("*.json")}
    replies = {n: c for n, c in logged.items() if "-out-train-" in n}
    assert len(replies) == trained
    finals = [c for n, c in logged.items() if "-out-evaluate-" in n]
    assert len(finals) == config.clients  # one evaluation of the final model each
    stages = config.stages if "forgetting" in config.scenario else 1
    for name, content in logged.items():
        # the global model going in, the hospital's update coming out: nothing else
        assert all(record == expected for record in content["arrays"].values()), name
        arrays = list(content["arrays"])
        assert arrays == ([] if "-out-evaluate-" in name else ["arrays"]), name
        for record in [*content["metrics"].values(), *content["configs"].values()]:
            for key, value in record.items():
                # a number, a name, or one number per stage (a hospital's figures)
                if isinstance(value, list):
                    assert len(value) <= stages, (name, key)
                    assert all(isinstance(v, int | float) for v in value), (name, key)
                else:
                    assert isinstance(value, int | float | str), (name, key)
    for content in replies.values():
        # the handler's phases and the message's way to it (the reply's: the server's)
        timings = {f"{SECONDS_PREFIX}{phase}" for phase in HOSPITAL_PHASES + MESSAGE_PHASES[:2]}
        assert set(content["metrics"]["metrics"]) == {
            "train-loss", "first-loss", "num-examples", "partition-id", *timings,
        }  # fmt: skip
        # the figures, and (DBC's mib term) which classes the masks annotate
        assert set(content["configs"]) <= {"evaluation", ANNOTATED_KEY}
        assert "evaluation" in content["configs"]
        figures = content["configs"]["evaluation"]
        assert set(figures) == {
            "server-round",
            "stages",
            "dice",
            "dice-own-stats",
            "dice-oracle-stats",
            "loss",
            "tiles",
        }
