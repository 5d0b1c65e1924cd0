"""Flower glue that can be tested without a running federation."""

from __future__ import annotations

import subprocess
import sys
import time
from types import SimpleNamespace

from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MessageType, RecordDict

from fedcl import hospital
from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES
from fedcl.federation import PromptGrid
from fedcl.models import build_model
from fedcl.processes import started_at
from fedcl.scenarios.builtin import Iid
from fedcl.transport import PACKED, pack_message, pack_mod, unpack, unpack_message


def test_hospital_data_is_generated_once_and_kept_in_context_state(monkeypatch):
    config = RunConfig(clients=2, image_size=32, train_tiles=4)
    calls = []
    real = Iid.train_dataset

    def counting(self, *args):
        calls.append(args)
        return real(self, *args)

    monkeypatch.setattr(Iid, "train_dataset", counting)
    state = RecordDict()
    first = hospital.local_train_data(config, 1, 1, state)
    second = hospital.local_train_data(config, 1, 2, state)
    assert calls == [(1, 1)]
    assert first.images.tobytes() == second.images.tobytes()
    assert first.masks.tobytes() == second.masks.tobytes()
    # A config that changes the data (another seed) regenerates it.
    third = hospital.local_train_data(config.replace(seed=1), 1, 3, state)
    assert len(calls) == 2 and third.images.tobytes() != first.images.tobytes()


def test_round_seeds_differ_per_hospital_and_round_and_repeat_for_a_seed():
    seeds = {hospital.round_seed(0, h, r) for h in range(3) for r in range(1, 4)}
    assert len(seeds) == 9
    assert hospital.round_seed(5, 1, 2) == hospital.round_seed(5, 1, 2)


def test_a_new_stage_replaces_the_cached_data(monkeypatch):
    config = RunConfig(
        clients=2,
        image_size=32,
        train_tiles=4,
        scenario="catastrophic-forgetting",
        stages=2,
        rounds_per_stage=2,
        rounds=4,
    )
    state = RecordDict()
    stage_0 = hospital.local_train_data(config, 0, 2, state)
    stage_1 = hospital.local_train_data(config, 0, 3, state)
    assert stage_0.images.tobytes() != stage_1.images.tobytes()
    assert hospital.local_train_data(config, 0, 4, state).images.tobytes() == (
        stage_1.images.tobytes()
    )


def test_records_are_valid_json_even_with_non_finite_scores():
    import json
    import math

    from fedcl.recorder import json_safe

    record = {
        "dice": math.nan,
        "aggregation": {"peer_scores": [0.1, math.inf, None]},
        "rows": [(1.0, -math.inf)],
        "name": "x",
        "n": 3,
    }
    safe = json_safe(record)
    assert safe == {
        "dice": None,
        "aggregation": {"peer_scores": [0.1, None, None]},
        "rows": [[1.0, None]],
        "name": "x",
        "n": 3,
    }
    json.dumps(safe, allow_nan=False)  # raises on NaN/Inf


# What only the server runs: its catalog, guard and records, the simulation driver, the
# other strategies' modules, DBC's continuity math and the server's own tiles.
SERVER_SIDE = {
    "fedcl.strategies.catalog",
    "fedcl.strategies.guard",
    "fedcl.strategies.dbc",
    "fedcl.strategies.fltrust",
    "fedcl.strategies.fedbn",
    "fedcl.strategies.fedprox",
    "fedcl.continuity",
    "fedcl.data.reference",
    "fedcl.federation",
    "fedcl.recorder",
    "fedcl.compare",
    "fedcl.simulation",
    "fedcl.plots",
    "server.app",
}


def test_a_hospital_imports_its_strategy_module_and_nothing_of_the_server():
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "tests.hospital_imports", "lwf"],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = set(result.stdout.split())
    assert {"fedcl.hospital", "fedcl.strategies.lwf", "fedcl.distillation"} <= loaded
    assert not loaded & SERVER_SIDE, sorted(loaded & SERVER_SIDE)


def test_a_process_knows_when_it_started_to_the_tick():
    before = time.time()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        started = started_at(child.pid)
        assert started is not None and before - 0.05 <= started <= time.time() + 0.05
    finally:
        child.kill()
        child.wait()
    assert started_at(child.pid) is None  # gone
    assert started_at() < time.time()


def test_a_message_waits_for_delivery_and_for_a_process_started_for_it(monkeypatch):
    msg = SimpleNamespace(metadata=SimpleNamespace(created_at=100.0))  # made at the server
    monkeypatch.setattr(hospital, "started_at", lambda: 103.0)  # deployment: after it
    assert hospital._waited(msg, entered=108.5) == (3.0, 5.5)
    monkeypatch.setattr(hospital, "started_at", lambda: 50.0)  # a worker that lives on
    assert hospital._waited(msg, entered=100.25) == (0.25, 0.0)


def test_a_message_travels_with_one_array_per_record_and_arrives_byte_for_byte(flower_task):
    state = build_model("unet", NUM_CLASSES).state_dict()
    record = ArrayRecord(state)
    content = RecordDict({"arrays": record, "config": ConfigRecord({"server-round": 3})})
    msg = pack_message(Message(content, dst_node_id=1, message_type=MessageType.TRAIN))
    packed = msg.content.array_records["arrays"]
    assert list(packed) == [PACKED] and len(record) == len(state) > 50  # 1 object, not 82
    assert msg.content.config_records["config"]["server-round"] == 3  # other records as made
    unpacked = unpack_message(msg).content.array_records["arrays"]
    assert unpacked.object_id == record.object_id  # every name, dtype, shape and byte
    assert unpack(record) is record  # a record that came unpacked stays as it is

    def hospital(received, context):
        assert list(received.content.array_records["arrays"]) == list(state)  # unpacked
        return Message(RecordDict({"arrays": record}), reply_to=received)

    sent = pack_message(Message(content, dst_node_id=1, message_type=MessageType.TRAIN))
    answer = pack_mod(sent, None, hospital)
    assert list(answer.content.array_records["arrays"]) == [PACKED]
    failed = Message(Error(code=0, reason="no"), reply_to=sent)
    assert pack_message(failed).has_error()  # an error carries no content to pack


def test_the_grid_pushes_packed_messages_and_pulls_replies_unpacked(flower_task):
    class Twice:
        """Goes over the pushed messages twice, as Flower's deployment grid does."""

        def push_messages(self, messages):
            ids = [m.object_id for m in messages]
            self.pushed = list(messages)
            return ids

        def pull_messages(self, message_ids):
            return [pack_message(m) for m in self.replies]

    record = ArrayRecord(build_model("unet", NUM_CLASSES).state_dict())
    grid = PromptGrid(Twice())
    inner = grid.grid
    msg = Message(RecordDict({"arrays": record}), dst_node_id=1, message_type=MessageType.TRAIN)
    (pushed_id,) = grid.push_messages([msg])
    assert [list(m.content.array_records["arrays"]) for m in inner.pushed] == [[PACKED]]
    assert pushed_id == inner.pushed[0].object_id
    inner.replies = [Message(RecordDict({"arrays": record}), reply_to=inner.pushed[0])]
    (pulled,) = grid.pull_messages([pushed_id])
    assert pulled.content.array_records["arrays"].object_id == record.object_id
