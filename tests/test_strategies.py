"""Strategies with real small models and mock replies (no Ray)."""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, Strategy

from fedcl.config import RunConfig
from fedcl.configure import flower_run_config, from_flower_run_config, load_config
from fedcl.continuity import barlow_continuity, largest_shares, peer_evidence
from fedcl.data import (
    NUM_CLASSES,
    Stain,
    TileDataset,
    apart_images,
    generate_tiles,
    perturb,
    reference_images,
)
from fedcl.distillation import (
    Distillation,
    PublicDistillation,
    UnbiasedLoss,
    annotated_classes,
    bits_classes,
    class_bits,
)
from fedcl.errors import FedclError
from fedcl.hospital import local_round, local_train_data
from fedcl.models import build_model
from fedcl.normalization import local_norm_keys
from fedcl.plugins import STRATEGIES
from fedcl.recorder import read_checkpoint
from fedcl.scenarios import scenario_of
from fedcl.scenarios.tiles import stage_classes
from fedcl.strategies.catalog import build_strategy, strategy_class
from fedcl.strategies.contract import Configurable, SentModel, hospital_half_of
from fedcl.strategies.dbc import DBCSettings, DynamicBarlowContinuity
from fedcl.strategies.dbc.hospital import (
    ANNOTATED_KEY,
    TEACHER_CLASSES_KEY,
    TEACHER_KEY,
    TEACHER_ROUND_KEY,
    TEACHER_SCALE_KEY,
    DBCHospital,
)
from fedcl.strategies.dbc.settings import TEACHER_STRENGTHS
from fedcl.strategies.fltrust import fltrust_aggregate
from fedcl.strategies.guard import GuardedStrategy
from fedcl.strategies.hospital_half import HospitalHalf
from fedcl.strategies.replies import by_partition, first_loss, malformed_reason
from fedcl.strategies.server_stats import FedAvgServerStats, unlabeled
from fedcl.training import recompute_batchnorm, train_local
from tests.conftest import FLOWER_OWN, FakeGrid

SIZE = 32


pytestmark = pytest.mark.usefixtures("flower_task")


def tiles(seed, count=24, stain_shift=0.1):
    stain = perturb(Stain(), np.random.default_rng(seed), stain_shift)
    images, masks = generate_tiles(
        count, size=SIZE, stain=stain, seed=np.random.SeedSequence(seed, spawn_key=(7,))
    )
    return TileDataset(images, masks, NUM_CLASSES)


def model_fn():
    return build_model("unet", NUM_CLASSES)


def trained(global_state, data, seed):
    model = model_fn()
    model.load_state_dict(global_state)
    train_local(model, data, epochs=3, batch_size=8, lr=3e-3, seed=seed, bn_stats="running")
    return model.state_dict()


def reply(to: Message, state, partition, n=24):
    arrays = state if isinstance(state, ArrayRecord) else ArrayRecord(state)
    content = RecordDict(
        {
            "arrays": arrays,
            "metrics": MetricRecord(
                {
                    "num-examples": n,
                    "partition-id": partition,
                    "train-loss": 1.0,
                    "first-loss": 1.0 + partition,
                }
            ),
        }
    )
    return Message(content=content, reply_to=to)


def message_parts(message):
    """A train message's parts as a hospital reads them (``local_round``'s keywords)."""
    content = message.content
    return {"sent": content["config"], "content": content, "state": RecordDict(), "training": True}


@pytest.fixture(scope="module")
def federation():
    """A random global model and replies trained from it (round 1)."""
    torch.manual_seed(0)
    global_state = model_fn().state_dict()
    clean = [trained(global_state, tiles(h), seed=h) for h in range(4)]
    inverted = tiles(10)
    inverted = TileDataset(255 - inverted.images, inverted.masks, NUM_CLASSES)
    permuted = tiles(11)
    permuted = TileDataset(
        permuted.images,
        ((permuted.masks.astype(int) % 4) + 1).astype(np.uint8) * (permuted.masks > 0),
        NUM_CLASSES,
    )
    drifted = {
        "inverted": trained(global_state, inverted, seed=10),
        "label-permuted": trained(global_state, permuted, seed=11),
    }
    reference = tiles(99, count=16, stain_shift=0.5)
    images = torch.from_numpy(reference.images).permute(0, 3, 1, 2).float() / 255
    return global_state, clean, drifted, images


def dbc(images, device="cpu", drifted=None, **settings):
    """DBC inside the guard every fedcl strategy runs in (it keeps the global model sent)."""
    sent = SentModel()
    inner = DynamicBarlowContinuity(
        reference_images=images,
        model_fn=model_fn,
        settings=DBCSettings(**settings),
        device=device,
        drifted=drifted,
        sent=sent,
        min_available_nodes=1,
        min_train_nodes=1,
    )
    return GuardedStrategy(inner, sent=sent)


def configure(strategy, global_state, n):
    arrays = ArrayRecord(global_state)
    messages = list(strategy.configure_train(1, arrays, ConfigRecord(), FakeGrid(n)))
    return arrays, messages


@pytest.mark.parametrize("rule", ["evidence", "round"])
@pytest.mark.parametrize("kind", ["inverted", "label-permuted"])
def test_dbc_rejects_a_drifted_reply_from_round_one(federation, kind, rule):
    global_state, clean, drifted, images = federation
    strategy = dbc(images, filter_rule=rule)
    _, messages = configure(strategy, global_state, 5)
    states = [*clean[:2], drifted[kind], *clean[2:]]
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, states, strict=True))]
    arrays, _ = strategy.aggregate_train(1, replies)
    report = strategy.round_report
    assert arrays is not None
    assert report["decisions"] == [
        "accepted",
        "accepted",
        "rejected-outlier",
        "accepted",
        "accepted",
    ]
    assert report["hospitals"] == [0, 1, 2, 3, 4]
    scores = report["evidence"] if rule == "evidence" else report["peer_scores"]
    threshold = 1.0 if rule == "evidence" else report["threshold"]
    assert scores[2] > threshold >= max(s for i, s in enumerate(scores) if i != 2)
    assert len(report["anchor_scores"]) == 5
    for columns, peer in zip(report["peer_columns"], report["peer_scores"], strict=True):
        kept = [c for c in columns if c is not None]  # each class's share of the score
        assert len(columns) == NUM_CLASSES and sum(kept) / len(kept) == pytest.approx(peer)
    for means in report["output_means"]:  # class probabilities: shares of the pixels
        assert len(means) == NUM_CLASSES and sum(means) == pytest.approx(1.0, abs=1e-4)
    assert report["consolidation"] is None  # still in warm-up


def test_dbc_max_class_compares_each_replys_largest_class_share(federation):
    global_state, clean, drifted, images = federation
    strategy = dbc(images, peer_score="max-class")
    _, messages = configure(strategy, global_state, 5)
    states = [*clean[:2], drifted["label-permuted"], *clean[2:]]
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, states, strict=True))]
    strategy.aggregate_train(1, replies)
    report = strategy.round_report
    largest = largest_shares(report["peer_columns"])
    assert largest != report["peer_scores"]  # not the mean over the classes
    assert report["evidence"] == pytest.approx(peer_evidence(largest, floor=0.02))
    assert report["decisions"][2] == "rejected-outlier"
    assert report["decisions"].count("accepted") == 4


def test_the_oracle_rule_rejects_exactly_the_drifted_hospitals_whatever_their_scores(
    federation,
):
    global_state, clean, drifted, images = federation
    with pytest.raises(ValueError, match="oracle"):
        dbc(images, filter_rule="oracle")
    strategy = dbc(images, filter_rule="oracle", drifted=lambda h, r: h == 1 and r >= 1)
    _, messages = configure(strategy, global_state, 5)
    states = [*clean[:2], drifted["inverted"], *clean[2:]]  # 2 stands out, 1 does not
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, states, strict=True))]
    strategy.aggregate_train(1, replies)
    report = strategy.round_report
    assert report["decisions"] == ["accepted", "rejected-outlier"] + ["accepted"] * 3
    assert max(report["evidence"]) == report["evidence"][2]  # the evidence is still kept
    pair = dbc(images, filter_rule="oracle", drifted=lambda h, r: h == 1)
    _, messages = configure(pair, global_state, 2)  # too few peers for evidence: still the truth
    pair.aggregate_train(
        1, [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean[:2], strict=True))]
    )
    assert pair.round_report["decisions"] == ["accepted", "rejected-outlier"]


def test_build_strategy_gives_dbc_the_scenarios_truth():
    config = RunConfig(
        strategy="dbc",
        scenario="client-drift",
        sections=(DBCSettings(filter_rule="oracle"),),
        image_size=SIZE,
        reference_size=4,
        drift_start_round=2,
    )
    strategy = build_strategy(config)
    truth = {h for h in range(config.clients) if scenario_of(config).is_drifted(h, 2)}
    assert len(truth) == 2
    assert {h for h in range(config.clients) if strategy.inner.filter.drifted(h, 2)} == truth
    assert not any(strategy.inner.filter.drifted(h, 1) for h in range(config.clients))
    assert not strategy.inner.filter.drifted("node-7", 2)


def test_dbc_never_scores_malformed_replies_and_goes_on(federation):
    # fedcl's screen drops them first; DBC decides on the rest.
    global_state, clean, _, _ = federation
    reports = {}
    config = RunConfig(strategy="dbc", clients=5, image_size=SIZE, reference_size=4)
    strategy = build_strategy(config, lambda r, _x, _m, report: reports.update({r: report}))
    _, messages = configure(strategy, global_state, 5)
    nan_state = {k: v.clone() for k, v in clean[0].items()}
    first = next(k for k, v in nan_state.items() if v.is_floating_point())
    nan_state[first][...] = float("nan")
    wrong_shape = ArrayRecord(clean[1])
    key = next(iter(wrong_shape))
    wrong_shape[key] = Array(np.zeros((2, 2), np.float32))
    states = [nan_state, wrong_shape, clean[1], clean[2], clean[3]]
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, states, strict=True))]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert [d["hospital"] for d in reports[1]["dropped"]] == [0, 1]
    assert reports[1]["hospitals"] == [2, 3, 4]
    assert reports[1]["decisions"] == ["accepted"] * 3


def test_dbc_with_everything_accepted_equals_fedavg(federation):
    global_state, clean, _, images = federation
    strategy = dbc(images, filter=False)
    _, messages = configure(strategy, global_state, 4)
    replies = [
        reply(m, s, p, n=10 + p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    expected, _ = FedAvg().aggregate_train(1, replies)
    ours, theirs = arrays.to_torch_state_dict(), expected.to_torch_state_dict()
    for name, value in theirs.items():
        if value.is_floating_point() and ours[name].is_floating_point():
            assert torch.equal(ours[name], value), name
        else:  # integer buffers: FedAvg makes them floats, DBC keeps the model's dtype
            assert ours[name] == value.round().to(ours[name].dtype)


def test_dbc_consolidates_after_warmup_and_keeps_its_state(federation):
    global_state, clean, _, images = federation
    settings = {
        "warmup": 0,
        "steps": 3,
        "lr": 1e-2,
        "filter": False,
        "consolidation": "always",
        "calm_after_warmup": True,  # movement measured from round 1 on (warm-up 0)
    }
    monotone = dbc(images, **settings)  # the default: a step that raises the loss is undone
    strategy = dbc(images, **settings, monotone=False)
    _, messages = configure(strategy, global_state, 4)
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
    strategy.aggregate_train(1, replies)
    consolidation = strategy.round_report["consolidation"]
    assert consolidation["steps"] == 3 and consolidation["mode"] == "always"
    assert consolidation["loss_after"] < consolidation["loss_before"]
    assert consolidation["undone"] == 0
    _, messages = configure(monotone, global_state, 4)
    monotone.aggregate_train(
        1, [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
    )
    held = monotone.round_report["consolidation"]
    assert held["steps"] + held["undone"] <= 3 and held["loss_after"] < held["loss_before"]
    state = strategy.state_dict()
    assert state["anchor"] is not None
    assert state["evidence"] == {p: [e] for p, e in enumerate(strategy.round_report["evidence"])}
    movement = statistics.median(strategy.round_report["anchor_scores"])
    # the detector's second sign: the replies' mean first loss, for the next round's jump
    first = statistics.fmean(1.0 + p for p in range(len(replies)))
    assert state["shifts"] == {"calm": [movement], "shift": [], "last_loss": first}
    restored = dbc(images)
    restored.load_state_dict(state)
    assert torch.equal(restored.inner.anchor, strategy.inner.anchor)
    assert restored.state_dict()["evidence"] == state["evidence"]
    assert restored.state_dict()["shifts"] == state["shifts"]
    # a checkpoint written before the shift detector: its calm history and shift length
    older = {k: v for k, v in state.items() if k != "shifts"} | {
        "movement": [movement],
        "shift_length": 2,
    }
    restored.load_state_dict(older)
    assert restored.inner.shifts.calm == [movement] and len(restored.inner.shifts.shift) == 2


def test_first_loss_is_the_replies_mean_and_ignores_what_is_no_loss(federation):
    global_state, clean, _, images = federation
    _, messages = configure(dbc(images), global_state, 4)
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
    assert first_loss(replies) == statistics.fmean(1.0 + p for p in range(len(replies)))
    replies[0].content["metrics"]["first-loss"] = float("nan")  # a reply's word, not a loss
    replies[1].content["metrics"]["first-loss"] = -1.0
    assert first_loss(replies) == statistics.fmean(1.0 + p for p in range(2, len(replies)))
    assert first_loss(replies[:2]) is None


@pytest.mark.parametrize("confident", [0.0, 0.3, 0.99999])
def test_consolidation_counts_only_the_pixels_the_anchor_is_confident_about(federation, confident):
    global_state, clean, _, images = federation
    strategy = dbc(
        images, warmup=0, steps=2, filter=False, consolidation="always", confident=confident
    )
    _, messages = configure(strategy, global_state, 4)
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
    strategy.aggregate_train(1, replies)
    consolidation = strategy.round_report["consolidation"]
    sure = int((strategy.inner.anchor.max(dim=1).values >= confident).sum())
    if sure >= 2:
        assert consolidation["pixels"] == sure and consolidation["steps"] == 2
    else:  # too few pixels to correlate: the aggregate is left as it is
        assert consolidation["steps"] == 0
    if confident == 0.0:
        assert consolidation["pixels"] == strategy.inner.anchor.shape[0]


def test_confident_consolidation_needs_probabilities():
    with pytest.raises(FedclError, match="dbc-confident"):
        DBCSettings(confident=0.5, representation="features")


@pytest.mark.parametrize(("calm", "steps"), [(1e-9, 3), (1e9, 0)])
def test_adaptive_consolidation_steps_only_in_a_shared_shift(federation, calm, steps):
    # the replies' movement (median anchor score) against a calm history far below it
    # is a shift (consolidate); against one far above it, ordinary learning (do not)
    global_state, clean, _, images = federation
    strategy = dbc(
        images, warmup=0, steps=3, lr=1e-2, consolidation="adaptive", filter=False, monotone=False
    )
    strategy.inner.shifts.calm = [calm] * 4
    _, messages = configure(strategy, global_state, 4)
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
    strategy.aggregate_train(2, replies)  # round 1's movement is never measured
    consolidation = strategy.round_report["consolidation"]
    assert consolidation["steps"] == steps and consolidation["shift"] == (steps > 0)
    # a shifted round stays out of the calm history: the shift lasts until movement is back
    assert len(strategy.inner.shifts.calm) == (4 if steps else 5)


def test_a_shift_is_consolidated_for_at_most_shift_rounds(federation):
    # movement stays far above a tiny calm history: rounds 1-2 of the shift are
    # consolidated, round 3 is not (still a shift, kept out of the calm history); a
    # calm round ends the shift and the next shift is consolidated again
    global_state, clean, _, images = federation
    settings = dict(warmup=0, steps=1, consolidation="adaptive", filter=False, shift_rounds=2)
    strategy = dbc(images, **settings)

    def one_round(server_round):
        _, messages = configure(strategy, global_state, 4)
        replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
        strategy.aggregate_train(server_round, replies)
        report = strategy.round_report
        return report["shift_length"], report["consolidation"]["shift"]

    strategy.inner.shifts.calm = [1e-9] * 4
    assert [one_round(r) for r in (2, 3, 4)] == [(1, True), (2, True), (3, False)]
    assert len(strategy.inner.shifts.calm) == 4  # no shifted round entered the calm history
    resumed = dbc(images, **settings)
    resumed.load_state_dict(strategy.state_dict())
    assert len(resumed.inner.shifts.shift) == 3
    strategy.inner.shifts.calm = [1e9] * 4  # the movement is back to calm: the shift ends
    assert one_round(5) == (0, False) and len(strategy.inner.shifts.calm) == 5
    strategy.inner.shifts.calm = [1e-9] * 4
    assert one_round(6) == (1, True)


@pytest.mark.parametrize("after_warmup", [True, False])
def test_the_calm_history_starts_where_it_says(federation, after_warmup):
    # with calm_after_warmup, rounds 1..warmup (the model leaving its random start)
    # never enter the history; without, every round from round 2 does
    global_state, clean, _, images = federation
    strategy = dbc(images, warmup=2, rho=1e9, filter=False, calm_after_warmup=after_warmup)
    for server_round in (1, 2, 3):
        _, messages = configure(strategy, global_state, 4)
        replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
        strategy.aggregate_train(server_round, replies)
        report = strategy.round_report
        assert (report["movement"] is None) == (server_round <= (2 if after_warmup else 1))
        assert report["movement"] in (None, statistics.median(report["anchor_scores"]))
    assert len(strategy.inner.shifts.calm) == (1 if after_warmup else 2)


@pytest.mark.parametrize("movement_from", ["start", "aggregate"])
def test_movement_after_consolidation_is_measured_from_where_it_says(federation, movement_from):
    # after a consolidated round, "aggregate" measures the replies from the aggregate
    # before consolidation, "start" from the consolidated model they started from
    global_state, clean, _, images = federation
    strategy = dbc(
        images,
        warmup=0,
        steps=3,
        lr=1e-2,
        filter=False,
        movement_from=movement_from,
        monotone=False,
        consolidation="adaptive",
    )
    strategy.inner.shifts.calm = [1e-9] * 4  # round 2 is a shift: consolidate
    _, messages = configure(strategy, global_state, 4)
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
    arrays, _ = strategy.aggregate_train(2, replies)
    assert strategy.round_report["consolidation"]["steps"] == 3
    assert (strategy.inner.unconsolidated is not None) == (movement_from == "aggregate")
    unconsolidated = strategy.inner.unconsolidated
    restored = dbc(images, warmup=0, movement_from=movement_from, consolidation="adaptive")
    restored.load_state_dict(strategy.state_dict())  # the reference survives a checkpoint
    _, messages = configure(restored, arrays.to_torch_state_dict(), 4)
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
    anchor = restored.inner.anchor.clone()
    restored.aggregate_train(3, replies)
    report = restored.round_report
    held = [barlow_continuity(anchor, restored.inner._outputs(state)) for state in clean]
    assert report["anchor_continuity"] == pytest.approx(held, rel=1e-6)  # the anchor before
    if movement_from == "start":
        expected = statistics.median(report["anchor_scores"])
    else:
        z = [restored.inner._outputs(state) for state in clean]
        expected = statistics.median(barlow_continuity(unconsolidated, zk) for zk in z)
    assert report["movement"] == pytest.approx(expected, rel=1e-6)
    if movement_from == "aggregate":  # consolidation moved the model: the two differ
        assert report["movement"] != pytest.approx(statistics.median(report["anchor_scores"]))


def test_dbc_names_a_teacher_when_a_shift_begins_and_sends_it_once_to_each_hospital(federation):
    global_state, clean, _, images = federation
    settings = dict(warmup=0, filter=False, consolidation="off")
    strategy = dbc(images, **settings)

    def one_round(server_round, state, answering=4):
        """Teacher arrays per node the round's messages carried; the teacher named; the report."""
        arrays = ArrayRecord(state)
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), FakeGrid(4)))
        got = {m.metadata.dst_node_id: m.content.array_records.get(TEACHER_KEY) for m in messages}
        named = {m.content.config_records["config"][TEACHER_ROUND_KEY] for m in messages}
        replies = [reply(m, c, p) for p, (m, c) in enumerate(zip(messages, clean, strict=True))]
        began = time.perf_counter()
        strategy.aggregate_train(server_round, replies[:answering])
        report = strategy.round_report
        assert 0 <= report["seconds_scoring"] <= time.perf_counter() - began  # a duration
        lost = {m.metadata.dst_node_id for m in messages[answering:]}
        return got, named, strategy.round_report, lost

    strategy.inner.shifts.calm = [1e-9] * 4  # round 2 jumps far above calm: a shift begins
    got, named, report, _ = one_round(2, global_state)
    assert set(got.values()) == {None} and named == {0} and report["shift_started"]
    assert report["teacher_round"] == 2 and report["extra_bytes"] == 0
    teacher = strategy.inner.teacher.to_torch_state_dict()  # the model round 2 started from
    assert all(torch.equal(teacher[k], global_state[k]) for k in global_state)
    strategy.inner.shifts.calm = [1e9] * 4  # calm again: the same teacher stays
    got, named, report, lost = one_round(3, clean[0], answering=3)  # one reply is lost
    assert None not in got.values() and named == {2} and not report["shift_started"]
    assert report["extra_bytes"] == 4 * got[1].count_bytes()
    got, named, report, _ = one_round(4, clean[1])
    assert {node for node, g in got.items() if g is not None} == lost  # only where it failed
    assert named == {2} and report["teacher_round"] == 2
    got, _, _, _ = one_round(5, clean[1])
    assert set(got.values()) == {None}
    # a checkpoint keeps it; after a resume (the hospitals' state gone) it goes to all
    resumed = dbc(images, **settings)
    resumed.load_state_dict(strategy.state_dict())
    strategy = resumed
    got, named, _, _ = one_round(6, clean[2])
    assert named == {2} and None not in got.values()
    assert all(torch.equal(got[1].to_torch_state_dict()[k], teacher[k]) for k in teacher)
    assert dbc(images, calm_rounds=5).inner.shifts.window == 5  # the level's calm rounds
    # with the hospitals' term off, no teacher is ever named
    off = dbc(images, **settings, teacher_weight=0.0)
    off.inner.shifts.calm = [1e-9] * 4
    _, messages = configure(off, global_state, 4)
    replies = [reply(m, c, p) for p, (m, c) in enumerate(zip(messages, clean, strict=True))]
    off.aggregate_train(2, replies)
    assert off.round_report["shift_started"] and off.inner.teacher is None


def test_the_teacher_terms_strength_can_follow_the_federations_movement(federation):
    global_state, clean, _, images = federation
    settings = dict(warmup=0, filter=False, consolidation="off")
    strategies = {s: dbc(images, **settings, teacher_strength=s) for s in TEACHER_STRENGTHS}
    for strength, strategy in strategies.items():
        strategy.inner.shifts.calm = [1e-9] * 4  # round 2 starts a shift
        scales, movements, state = [], [], global_state
        for server_round in (2, 3, 4):
            arrays = ArrayRecord(state)
            messages = list(
                strategy.configure_train(server_round, arrays, ConfigRecord(), FakeGrid(4))
            )
            scales.append(messages[0].content.config_records["config"][TEACHER_SCALE_KEY])
            replies = [reply(m, c, p) for p, (m, c) in enumerate(zip(messages, clean, strict=True))]
            aggregated, _ = strategy.aggregate_train(server_round, replies)
            strategy.inner.shifts.calm = [1e9] * 4  # calm from now on: the same teacher
            movements.append(strategy.round_report["movement"])
            state = aggregated.to_torch_state_dict()
        if strength == "constant":
            assert scales == [1.0, 1.0, 1.0]
        else:  # round 3: the shift's own movement; round 4: round 3's over it
            assert scales[:2] == [1.0, 1.0]
            assert scales[2] == pytest.approx(min(1.0, movements[1] / movements[0]))
            assert scales[2] < 1.0  # the shift's round moved most
    config = load_config(
        {"strategy": "dbc", "scenario": "catastrophic-forgetting", "image-size": 32}
        | {"reference-size": 6, "batch-size": 4, "stages": 2, "rounds-per-stage": 3}
        | {"dbc-teacher-public": False}
    )
    teacher = ArrayRecord(build_model("unet", NUM_CLASSES).state_dict())
    model = build_model("unet", NUM_CLASSES)
    (held,) = dbc_penalties(config, 5, model, RecordDict(), 4, teacher, scale=0.25)
    assert held.weight == pytest.approx(0.25)  # teacher-weight 1 x the server's factor


def test_dbc_can_rewind_to_the_teacher_when_it_finds_a_shift(federation):
    # the shift round trained without a teacher: with rewind the next round starts from
    # the teacher (the model that round began from), in that round only
    global_state, clean, _, images = federation
    strategy = dbc(images, warmup=0, filter=False, rewind=True)
    strategy.inner.shifts.calm = [1e-9] * 4  # round 2 jumps far above calm: a shift begins
    _, messages = configure(strategy, global_state, 4)
    replies = [reply(m, c, p) for p, (m, c) in enumerate(zip(messages, clean, strict=True))]
    arrays, _ = strategy.aggregate_train(2, replies)
    assert strategy.round_report["rewound"] and strategy.round_report["consolidation"] is None
    state = arrays.to_torch_state_dict()
    assert all(torch.equal(state[k], global_state[k]) for k in global_state)
    strategy.inner.shifts.calm = [1e9] * 4  # calm: the aggregate again, consolidated
    _, messages = configure(strategy, global_state, 4)
    replies = [reply(m, c, p) for p, (m, c) in enumerate(zip(messages, clean, strict=True))]
    arrays, _ = strategy.aggregate_train(3, replies)
    assert not strategy.round_report["rewound"]
    key = next(k for k, v in global_state.items() if v.is_floating_point() and v.ndim == 4)
    assert not torch.equal(arrays.to_torch_state_dict()[key], global_state[key])
    off = dbc(images, warmup=0, filter=False)  # the default keeps the shift round's aggregate
    off.inner.shifts.calm = [1e-9] * 4
    _, messages = configure(off, global_state, 4)
    replies = [reply(m, c, p) for p, (m, c) in enumerate(zip(messages, clean, strict=True))]
    kept, _ = off.aggregate_train(2, replies)
    assert off.round_report["shift_started"] and not off.round_report["rewound"]
    assert not torch.equal(kept.to_torch_state_dict()[key], global_state[key])


@pytest.mark.parametrize("by", ["teacher", "mix"])
def test_dbc_can_consolidate_toward_the_teacher_it_names(federation, by):
    global_state, clean, _, images = federation
    strategy = dbc(
        images,
        warmup=0,
        filter=False,
        consolidation="adaptive",
        consolidate_by=by,
        steps=3,
        mix_grid=3,
    )
    strategy.inner.shifts.calm = [1e-9] * 4  # round 2 jumps far above calm: a shift begins
    arrays = ArrayRecord(global_state)
    messages = list(strategy.configure_train(2, arrays, ConfigRecord(), FakeGrid(4)))
    replies = [reply(m, c, p) for p, (m, c) in enumerate(zip(messages, clean, strict=True))]
    consolidated, _ = strategy.aggregate_train(2, replies)
    report = strategy.round_report["consolidation"]
    assert report["by"] == by and report["shift"]  # the teacher: the model round 2 began from
    plain = dbc(images, warmup=0, filter=False, consolidation="off")
    _, again = configure(plain, global_state, 4)
    aggregate, _ = plain.aggregate_train(
        2, [reply(m, c, p) for p, (m, c) in enumerate(zip(again, clean, strict=True))]
    )
    state, average = consolidated.to_torch_state_dict(), aggregate.to_torch_state_dict()
    key = next(k for k, v in global_state.items() if v.is_floating_point() and v.ndim == 4)
    if by == "teacher":
        assert report["steps"] == 3 and report["loss"] >= 0
        assert not torch.equal(state[key], average[key])  # distilled, statistics re-estimated
    else:
        assert len(report["mix_scores"]) == 3 and report["mix"] in (0.0, 0.5, 1.0)
        expected = torch.lerp(average[key], global_state[key], report["mix"])
        assert torch.allclose(state[key], expected, atol=1e-6)
    # no teacher yet (no shift found): nothing to consolidate toward
    calm = dbc(images, warmup=0, filter=False, consolidate_by=by)
    _, messages = configure(calm, global_state, 4)
    calm.aggregate_train(
        1, [reply(m, c, p) for p, (m, c) in enumerate(zip(messages, clean, strict=True))]
    )
    assert calm.round_report["consolidation"] is None


def dbc_half(config, server_round, state, teacher_round, teacher=None, scale=1.0, classes=None):
    """DBC's hospital half in a train message naming ``teacher_round`` (and sending ``teacher``).

    ``classes``: the teacher's classes (class_bits) the server names, if any.
    """
    sent = ConfigRecord({TEACHER_ROUND_KEY: teacher_round, TEACHER_SCALE_KEY: scale})
    if classes is not None:
        sent[TEACHER_CLASSES_KEY] = classes
    content = RecordDict({"config": sent} | ({TEACHER_KEY: teacher} if teacher else {}))
    now = local_round(
        config, 1, server_round, sent=sent, content=content, state=state, training=True
    )
    return DBCHospital(now)


def dbc_penalties(config, server_round, model, state, teacher_round, teacher=None, **kwargs):
    """The terms :func:`dbc_half` adds to the local loss."""
    return dbc_half(config, server_round, state, teacher_round, teacher, **kwargs).penalties(model)


def test_dbcs_hospitals_hold_to_the_teacher_the_server_named_on_own_and_public_tiles():
    config = load_config(
        {"strategy": "dbc", "scenario": "catastrophic-forgetting", "image-size": 32}
        | {"reference-size": 6, "batch-size": 4, "stages": 2, "rounds-per-stage": 3}
    )
    model, named = build_model("unet", NUM_CLASSES), build_model("unet", NUM_CLASSES)
    torch.nn.init.constant_(next(named.parameters()), 3.0)
    teacher, state = ArrayRecord(named.state_dict()), RecordDict()
    assert dbc_penalties(config, 3, model, state, 0) == []  # no shift found yet
    every = class_bits(range(1, NUM_CLASSES))  # the teacher knew every class: none is new
    own, public = dbc_penalties(config, 5, model, state, 4, teacher, classes=every)
    assert type(own) is Distillation and isinstance(public, PublicDistillation)
    assert torch.equal(next(own.teacher.parameters()), next(named.parameters()))
    assert public.student is model and (own.weight, own.term) == (1.0, "mib")
    expected = torch.from_numpy(reference_images(config, 5)).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(public.images, expected)  # the public tiles the server scores on
    # kept in the hospital's state
    (later, _) = dbc_penalties(config, 6, model, state, 4, classes=every)
    assert torch.equal(next(later.teacher.parameters()), next(named.parameters()))
    with pytest.raises(FedclError, match="never sent it"):
        dbc_penalties(config, 7, model, state, 6)  # a teacher it never got
    own_only = config.with_keys({"dbc-teacher-public": False, "dbc-teacher-term": "barlow"})
    (penalty,) = dbc_penalties(own_only, 6, model, state, 4)
    assert penalty.term == "barlow" and penalty.new_classes == ()
    # the tissue shift annotates every class in every stage: MiB's halves are KL and
    # fedcl's own loss there, whatever the teacher knew
    mib = config.with_keys({"dbc-teacher-term": "mib", "dbc-unbiased-loss": True})
    annotated = annotated_classes(local_train_data(mib, 1, 6, RecordDict()).masks)
    assert annotated == tuple(range(1, NUM_CLASSES))
    own, public = dbc_penalties(mib, 6, model, state, 4, classes=class_bits(annotated))
    assert own.new_classes == public.new_classes == ()
    assert dbc_half(mib, 6, state, 4).criterion() is None
    assert dbc_penalties(config.with_keys({"dbc-teacher-weight": 0.0}), 6, model, state, 4) == []
    # on the public tiles alone, those the server had before the shift (round 3: stage 0)
    teachers = config.with_keys({"dbc-teacher-own": False, "dbc-teacher-public-set": "teacher"})
    (public,) = dbc_penalties(teachers, 6, model, state, 4, classes=every)
    expected = torch.from_numpy(reference_images(config, 3)).permute(0, 3, 1, 2).float() / 255
    assert isinstance(public, PublicDistillation) and torch.allclose(public.images, expected)
    later_set = torch.from_numpy(reference_images(config, 6)).permute(0, 3, 1, 2).float() / 255
    assert not torch.allclose(public.images, later_set)  # stage 1's tissue is in round 6's
    # public tiles apart from the reference set: none of the tiles the server scores on
    apart = config.with_keys({"dbc-teacher-public-tiles": "apart"})
    (_, public) = dbc_penalties(apart, 6, model, state, 4, classes=every)
    expected = torch.from_numpy(apart_images(config, 6)).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(public.images, expected) and public.images.shape == later_set.shape
    assert not any(torch.equal(a, r) for a in public.images for r in later_set)


def test_dbcs_mib_term_folds_the_classes_its_teacher_was_not_trained_on():
    config = load_config(
        {"strategy": "dbc", "scenario": "catastrophic-forgetting", "stage-shift": "classes"}
        | {"stages": 3, "rounds-per-stage": 2, "image-size": 32, "train-tiles": 8}
        | {"reference-size": 6, "batch-size": 4, "dbc-teacher-term": "mib"}
    )
    model, state = build_model("unet", NUM_CLASSES), RecordDict()
    teacher = ArrayRecord(build_model("unet", NUM_CLASSES).state_dict())
    first, second = stage_classes(config, 0), stage_classes(config, 1)  # round 3: stage 1
    # while the masks annotate classes new to the teacher, the term on the own tiles only
    (own,) = dbc_penalties(config, 3, model, state, 3, teacher, classes=class_bits(first))
    assert own.new_classes == second and not isinstance(own, PublicDistillation)
    also = config.with_keys({"dbc-teacher-public-new-classes": True})
    own, public = dbc_penalties(also, 3, model, state, 3, classes=class_bits(first))
    assert own.new_classes == public.new_classes == second
    # a teacher trained on them already (a shift found inside a stage): the KL term, both
    own, public = dbc_penalties(config, 4, model, state, 3, classes=class_bits((*first, *second)))
    assert own.new_classes == public.new_classes == ()
    # no classes named (replies without them): every annotated class counts as new
    (own,) = dbc_penalties(config, 4, model, state, 3)
    assert own.new_classes == second
    # the reply tells the server which classes the round's masks annotate
    content = RecordDict()
    dbc_half(config, 4, state, 3).reply(content)
    assert bits_classes(content.config_records[ANNOTATED_KEY]["classes"]) == second
    content = RecordDict()
    dbc_half(config.with_keys({"dbc-teacher-term": "kl"}), 4, state, 3).reply(content)
    assert ANNOTATED_KEY not in content  # only the mib term needs them
    # MiB's unbiased loss: with a teacher, where classes are unannotated
    unbiased = config.with_keys({"dbc-unbiased-loss": True})
    assert dbc_half(unbiased, 4, state, 0).criterion() is None  # no teacher yet
    loss = dbc_half(unbiased, 4, state, 3).criterion()
    biased = config.with_keys({"dbc-unbiased-loss": False})
    assert isinstance(loss, UnbiasedLoss) and dbc_half(biased, 4, state, 3).criterion() is None
    assert loss.unannotated == [c for c in range(1, NUM_CLASSES) if c not in second]


def test_dbc_tells_its_hospitals_which_classes_the_teacher_was_trained_on(federation):
    global_state, clean, _, images = federation
    strategy = dbc(images, warmup=0, filter=False, consolidation="off")

    def one_round(server_round, classes, state=global_state):
        messages = list(
            strategy.configure_train(server_round, ArrayRecord(state), ConfigRecord(), FakeGrid(4))
        )
        replies = [reply(m, c, p) for p, (m, c) in enumerate(zip(messages, clean, strict=True))]
        for msg, annotated in zip(replies, classes, strict=True):
            msg.content[ANNOTATED_KEY] = ConfigRecord({"classes": class_bits(annotated)})
        strategy.aggregate_train(server_round, replies)
        return {m.content.config_records["config"][TEACHER_CLASSES_KEY] for m in messages}

    strategy.inner.shifts.calm = [1e9] * 4  # calm
    assert one_round(1, [(1,), (1, 2), (1,), (2,)]) == {0}  # no teacher yet
    strategy.inner.shifts.calm = [1e-9] * 4  # round 2 is a shift: its start model the teacher
    assert one_round(2, [(3,)] * 4) == {0}
    strategy.inner.shifts.calm = [1e9] * 4
    assert one_round(3, [(3,)] * 4) == {class_bits((1, 2))}  # what rounds before 2 annotated
    hostile = list(
        strategy.configure_train(3, ArrayRecord(global_state), ConfigRecord(), FakeGrid(1))
    )
    odd = reply(hostile[0], clean[0], 0)
    odd.content[ANNOTATED_KEY] = ConfigRecord({"classes": "all of them"})
    strategy.inner._teach(3, [odd], False)  # a reply's malformed record changes nothing
    assert strategy.inner.annotated == class_bits((1, 2, 3))
    resumed = dbc(images, warmup=0, filter=False, consolidation="off")
    resumed.load_state_dict(strategy.state_dict())
    strategy = resumed
    assert one_round(4, [(3,)] * 4) == {class_bits((1, 2))}
    assert strategy.inner.annotated == class_bits((1, 2, 3))


def test_dbc_keeps_the_global_model_when_every_reply_is_rejected(federation):
    global_state, clean, _, images = federation
    strategy = dbc(images)
    configure(strategy, global_state, 1)
    # everything was screened out upstream (min-replies 0 would let the guard call it)
    arrays, _ = strategy.inner.aggregate_train(1, [])
    assert arrays is None and strategy.round_report["all_rejected"] is True
    # Through fedcl's screen: the round keeps the global model and says why.
    reports = {}
    config = RunConfig(strategy="dbc", clients=1, image_size=SIZE, reference_size=4)
    guarded = build_strategy(config, lambda r, _x, _m, report: reports.update({r: report}))
    _, messages = configure(guarded, global_state, 1)
    bad = {k: v.clone() for k, v in clean[0].items()}
    next(v for v in bad.values() if v.is_floating_point())[...] = float("inf")
    arrays, _ = guarded.aggregate_train(1, [reply(messages[0], bad, 0)])
    assert arrays is None and "min-replies" in reports[1]["skipped"]


def test_malformed_reason_names_the_problem(federation):
    global_state, clean, _, _ = federation
    template = ArrayRecord(global_state)
    good = RecordDict(
        {"arrays": ArrayRecord(clean[0]), "metrics": MetricRecord({"num-examples": 3})}
    )
    assert malformed_reason(good, template) is None
    missing = ArrayRecord(clean[0])
    del missing[next(iter(missing))]
    assert "keys differ" in malformed_reason(
        RecordDict({"arrays": missing, "metrics": MetricRecord({"num-examples": 3})}), template
    )
    as_double = ArrayRecord(
        {
            k: Array(v.numpy().astype(np.float64)) if v.is_floating_point() else Array(v.numpy())
            for k, v in clean[0].items()
        }
    )
    assert "dtype" in malformed_reason(
        RecordDict({"arrays": as_double, "metrics": MetricRecord({"num-examples": 3})}), template
    )
    assert "num-examples" in malformed_reason(
        RecordDict({"arrays": ArrayRecord(clean[0]), "metrics": MetricRecord({"x": 1})}), template
    )


def test_replies_are_sorted_by_partition_id(federation):
    global_state, clean, _, _ = federation
    strategy = FedAvg(min_available_nodes=1, min_train_nodes=1)
    _, messages = configure(strategy, global_state, 3)
    replies = [reply(messages[i], clean[0], partition) for i, partition in enumerate([2, 0, 1])]
    assert [r.content["metrics"]["partition-id"] for r in by_partition(replies)] == [0, 1, 2]


def test_fltrust_trusts_aligned_updates_and_ignores_opposed_ones():
    global_state = {"w": torch.zeros(3), "bn": torch.tensor([1.0, 1.0, 1.0])}
    server = {"w": torch.tensor([1.0, 0.0, 0.0]), "bn": torch.zeros(3)}
    aligned = {"w": torch.tensor([4.0, 0.0, 0.0]), "bn": torch.tensor([2.0, 2.0, 2.0])}
    opposed = {"w": torch.tensor([-5.0, 0.0, 0.0]), "bn": torch.tensor([9.0, 9.0, 9.0])}
    new, trust = fltrust_aggregate(global_state, [aligned, opposed], server, {"w"})
    assert trust == [1.0, 0.0]
    assert torch.allclose(new["w"], torch.tensor([1.0, 0.0, 0.0]))  # rescaled to |g0| = 1
    assert torch.allclose(new["bn"], torch.tensor([2.0, 2.0, 2.0]))  # trust-weighted buffers
    same, trust = fltrust_aggregate(global_state, [opposed], server, {"w"})
    assert trust == [0.0] and torch.equal(same["w"], global_state["w"])


def test_server_statistics_are_fedavg_with_the_statistics_of_the_reference_set(federation):
    global_state, clean, _, _ = federation
    reference = unlabeled(tiles(99, count=10, stain_shift=0.5).images)  # batches 4, 4, 2
    strategy = FedAvgServerStats(
        model_fn=model_fn,
        tiles_of=lambda _round: reference,
        batch_size=4,
        min_available_nodes=1,
        min_train_nodes=1,
    )
    _, messages = configure(strategy, global_state, 4)
    replies = [
        reply(m, s, p, n=10 + p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    fedavg, _ = FedAvg().aggregate_train(1, replies)
    direct = model_fn()
    direct.load_state_dict(fedavg.to_torch_state_dict())
    recompute_batchnorm(direct, reference, 4)
    statistics = set(local_norm_keys(direct, "statistics"))
    assert statistics and list(arrays) == list(fedavg)
    ours, theirs, expected = (
        arrays.to_torch_state_dict(),
        fedavg.to_torch_state_dict(),
        direct.state_dict(),
    )
    for name in fedavg:
        if name in statistics:  # the direct re-estimation's, in the model's dtype
            assert ours[name].dtype == expected[name].dtype, name
            assert torch.equal(ours[name], expected[name]), name
        else:  # FedAvg's, bit for bit
            assert arrays[name].numpy().tobytes() == fedavg[name].numpy().tobytes(), name
    assert all(int(ours[k]) == 3 for k in statistics if k.endswith("num_batches_tracked"))
    mean = next(k for k in statistics if k.endswith("running_mean"))
    assert not torch.allclose(ours[mean], theirs[mean])  # not the hospitals' average
    again, _ = strategy.aggregate_train(1, replies)  # deterministic
    assert all(again[k].numpy().tobytes() == arrays[k].numpy().tobytes() for k in arrays)


def test_server_statistics_are_taken_on_the_public_reference_set():
    config = RunConfig(strategy="fedavg-server-stats", image_size=32, reference_size=4)
    inner = build_strategy(config).inner
    assert isinstance(inner, FedAvgServerStats) and inner.batch_size == config.batch_size
    tiles = inner.statistics_tiles(1)
    assert tiles.images.tobytes() == reference_images(config, 1).tobytes()
    assert inner.statistics_tiles(2) is tiles  # loaded once while the public stages stay


@pytest.mark.parametrize("model", ["unet-instance", "unet-group"])
def test_server_statistics_refuse_a_network_without_batchnorm(model):
    with pytest.raises(FedclError, match=f"model '{model}' has none"):
        load_config({"strategy": "fedavg-server-stats", "model": model})


def test_dbc_server_stats_take_the_statistics_of_the_reference_tiles(federation):
    global_state, clean, _, images = federation
    aggregates = {}
    for server_stats in (False, True):
        strategy = dbc(images, server_stats=server_stats, filter=False)
        _, messages = configure(strategy, global_state, 4)
        replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
        aggregates[server_stats] = strategy.aggregate_train(1, replies)[0].to_torch_state_dict()
    direct = model_fn()
    direct.load_state_dict(aggregates[False])
    tiles = unlabeled((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    recompute_batchnorm(direct, tiles, 16)
    statistics = set(local_norm_keys(direct, "statistics"))
    for name, value in aggregates[True].items():
        expected = direct.state_dict()[name] if name in statistics else aggregates[False][name]
        assert torch.equal(value, expected), name
    with pytest.raises(FedclError, match="dbc-server-stats"):
        load_config({"strategy": "dbc", "model": "unet-group", "dbc-server-stats": True})


@pytest.mark.parametrize("name", sorted(STRATEGIES.builtin))
def test_every_builtin_name_builds_a_flower_strategy(name):
    config = RunConfig(strategy=name, clients=5, image_size=32, reference_size=4, root_tiles=4)
    strategy = build_strategy(config)
    assert isinstance(strategy, Strategy)
    assert isinstance(strategy, GuardedStrategy)
    assert type(strategy.inner) is STRATEGIES.load(name)


def test_plugin_by_dotted_path_and_unknown_names():
    cls = strategy_class("plugin_strategy:HalfStep")
    assert cls.__name__ == "HalfStep"
    built = build_strategy(RunConfig(strategy="plugin_strategy:HalfStep", clients=4))
    assert type(built.inner) is cls and built.inner.min_available_nodes == 4  # sampling given
    with pytest.raises(FedclError, match="unknown strategy 'fedprx'.*Did you mean 'fedprox'"):
        strategy_class("fedprx")
    with pytest.raises(FedclError, match="cannot import module 'no_such_module'"):
        strategy_class("no_such_module:X")
    with pytest.raises(FedclError, match="has no 'Nope'"):
        strategy_class("plugin_strategy:Nope")
    with pytest.raises(FedclError, match="not a flwr Strategy subclass"):
        strategy_class("plugin_strategy:NotAStrategy")


def test_plugin_by_entry_point(monkeypatch):
    class EntryPoint:
        name = "halfstep"

        def load(self):
            from plugin_strategy import HalfStep

            return HalfStep

    monkeypatch.setattr("fedcl.plugins.entry_points", lambda group: [EntryPoint()])
    assert strategy_class("halfstep").__name__ == "HalfStep"


@pytest.mark.parametrize(("name", "terms"), [("fedprox", 1), ("fedavg", 0), ("dbc", 0)])
def test_only_fedprox_hospitals_add_a_proximal_term(federation, name, terms):
    config = load_config(
        {"strategy": name, "clients": 2, "image-size": 32, "reference-size": 4}
        | ({"proximal-mu": 0.05} if name == "fedprox" else {})
    )
    strategy = build_strategy(config)
    train_config = ConfigRecord(config.to_mapping())  # as serve()
    messages = list(
        strategy.configure_train(1, ArrayRecord(federation[0]), train_config, FakeGrid(2))
    )
    half = hospital_half_of(STRATEGIES.load(name))
    model = build_model("unet", NUM_CLASSES)
    for message in messages:
        sent = message.content["config"]
        now = local_round(
            config, 0, 1, sent=sent, content=message.content, state=RecordDict(), training=True
        )
        penalties = half(now).penalties(model)
        assert len(penalties) == terms
        if terms:  # (mu / 2) ||w - w0||^2 with the mu the server sent: 0 at the start
            assert sent["proximal-mu"] == 0.05 and penalties[0].mu == 0.05
            assert float(penalties[0](None, None).detach()) == 0.0


def _hostile(kind, state, global_state):
    """One malformed or hostile version of a trained ``state`` (and its num-examples)."""
    state = {k: v.clone() for k, v in state.items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    n = 24
    if kind == "nan":
        state[first][...] = float("nan")
    elif kind == "inf":
        state[first].view(-1)[0] = float("inf")
    elif kind == "wrong-shape":
        state[first] = torch.zeros(2, 2)
    elif kind == "wrong-dtype":
        state[first] = state[first].double()
    elif kind == "missing-key":
        del state[first]
    elif kind == "huge-norm":  # a scaled (model-replacement) update
        state = {
            k: g + 1e4 * (v - g) if v.is_floating_point() else v
            for (k, v), g in zip(state.items(), global_state.values(), strict=True)
        }
    elif kind == "no-weight":
        n = 0
    return state, n


HOSTILE = ["nan", "inf", "wrong-shape", "wrong-dtype", "missing-key", "huge-norm", "no-weight"]
GUARDED = ["fedavg", "krum", "dbc"]


def _guarded(name):
    reports = {}
    config = RunConfig(strategy=name, clients=6, image_size=SIZE, reference_size=4)
    strategy = build_strategy(config, lambda r, _replies, _m, report: reports.update({r: report}))
    return strategy, reports


@pytest.mark.parametrize("name", GUARDED)
@pytest.mark.parametrize("kind", HOSTILE)
def test_every_strategy_drops_a_malformed_or_hostile_reply(federation, name, kind):
    global_state, clean, _, _ = federation
    honest = [clean[0], clean[1], clean[2], clean[3], clean[0]]
    bad, n = _hostile(kind, clean[1], global_state)

    strategy, reports = _guarded(name)
    _, messages = configure(strategy, global_state, 6)
    replies = [reply(messages[0], bad, 0, n=n)] + [
        reply(m, s, p) for p, (m, s) in enumerate(zip(messages[1:], honest, strict=True), 1)
    ]
    arrays, _ = strategy.aggregate_train(1, replies)

    # The round goes on without it, exactly as if the hospital had not replied.
    baseline, _ = _guarded(name)
    _, again = configure(baseline, global_state, 6)
    alone = [reply(m, s, p) for p, (m, s) in enumerate(zip(again[1:], honest, strict=True), 1)]
    expected, _ = baseline.aggregate_train(1, alone)
    assert arrays is not None and expected is not None
    for key, value in expected.items():
        np.testing.assert_array_equal(arrays[key].numpy(), value.numpy())
        assert arrays[key].dtype == ArrayRecord(global_state)[key].dtype  # ints stay ints
    dropped = reports[1]["dropped"]
    assert [d["hospital"] for d in dropped] == [0]
    words = {"nan": "non-finite", "inf": "non-finite", "wrong-shape": "shape",
             "wrong-dtype": "dtype", "missing-key": "missing", "huge-norm": "update norm",
             "no-weight": "num-examples"}  # fmt: skip
    assert words[kind] in dropped[0]["reason"]


# Their two-round Ray runs (test_simulation) are slow-marked: checked here in-process.
@pytest.mark.parametrize("name", FLOWER_OWN)
def test_flowers_own_aggregators_aggregate_inside_the_guard(federation, name):
    assert hospital_half_of(strategy_class(name)) is HospitalHalf
    global_state, clean, _, _ = federation
    strategy, _ = _guarded(name)
    _, messages = configure(strategy, global_state, 6)
    states = [*clean, clean[0], clean[1]]
    replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, states, strict=True))]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None and list(arrays.keys()) == list(global_state)
    for key, value in arrays.items():
        assert value.dtype == ArrayRecord(global_state)[key].dtype  # ints stay ints
        assert np.isfinite(value.numpy()).all()
    moved = [k for k in global_state if not np.array_equal(arrays[k].numpy(), global_state[k])]
    assert moved  # an aggregate of the trained replies, not the model sent


def test_an_error_reply_costs_only_that_hospital(federation):
    from flwr.app import Error

    global_state, clean, _, _ = federation
    strategy, reports = _guarded("fedavg")
    _, messages = configure(strategy, global_state, 6)
    replies = [
        Message(error=Error(code=0, reason="RuntimeError: disk on fire"), reply_to=messages[0]),
        reply(messages[1], clean[0], 1),
        reply(messages[2], clean[1], 2),
    ]
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert "disk on fire" in reports[1]["dropped"][0]["reason"]


def test_too_few_usable_replies_keep_the_global_model(federation):
    global_state, clean, _, _ = federation
    config = RunConfig(strategy="fedavg", clients=3, image_size=SIZE, min_replies=3)
    reports = {}
    strategy = build_strategy(config, lambda r, _x, _m, report: reports.update({r: report}))
    _, messages = configure(strategy, global_state, 3)
    bad, n = _hostile("nan", clean[0], global_state)
    replies = [reply(messages[0], bad, 0, n), reply(messages[1], clean[1], 1)]
    replies.append(reply(messages[2], clean[2], 2))
    arrays, _ = strategy.aggregate_train(1, replies)
    assert arrays is None  # Flower keeps the previous global model
    assert "min-replies" in reports[1]["skipped"]


@pytest.mark.cuda
def test_dbc_on_cuda_agrees_with_cpu_and_resumes_on_either(federation, tmp_path):
    global_state, clean, drifted, images = federation
    states = [*clean, drifted["inverted"]]
    settings = {
        "warmup": 0,
        "steps": 3,
        "lr": 1e-2,
        "consolidation": "always",
        "movement_from": "aggregate",  # keeps Z of the unconsolidated aggregate: a tensor
    }
    reports, strategies = [], []
    for device in ("cpu", "cuda"):
        strategy = dbc(images, device=device, **settings)
        _, messages = configure(strategy, global_state, len(states))
        replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, states, strict=True))]
        arrays, _ = strategy.aggregate_train(1, replies)
        assert all(a.device.type == "cpu" for a in arrays.to_torch_state_dict().values())
        reports.append(strategy.round_report)
        strategies.append(strategy)
    cpu, gpu = reports
    assert gpu["decisions"] == cpu["decisions"]
    assert gpu["peer_scores"] == pytest.approx(cpu["peer_scores"], rel=1e-3)
    assert gpu["consolidation"]["loss_after"] < gpu["consolidation"]["loss_before"]
    assert strategies[1].anchor.is_cuda and strategies[1].unconsolidated.is_cuda
    # a checkpoint written on the GPU resumes on a CPU-only server and back
    torch.save(
        {"round": 1, "model": {}, "strategy": strategies[1].state_dict()},
        tmp_path / "checkpoint.pt",
    )
    state = read_checkpoint(tmp_path)["strategy"]
    for device in ("cpu", "cuda"):
        resumed = dbc(images, device=device, **settings)
        resumed.load_state_dict(state)
        assert resumed.inner.anchor.device.type == device
        assert resumed.inner.unconsolidated.device.type == device
        _, messages = configure(resumed, global_state, len(clean))
        replies = [reply(m, s, p) for p, (m, s) in enumerate(zip(messages, clean, strict=True))]
        assert resumed.aggregate_train(2, replies)[0] is not None
        assert resumed.round_report["movement"] is not None  # from the resumed tensor


def test_a_plugin_in_the_working_directory_is_found_and_a_legacy_one_gets_a_hint(
    tmp_path, monkeypatch
):
    (tmp_path / "my_cwd_strategies.py").write_text(
        "from flwr.serverapp.strategy import FedAvg\n"
        "from flwr.server.strategy import FedAvg as LegacyFedAvg\n\n"
        "class CountingFedAvg(FedAvg):\n    pass\n\n"
        "class Legacy(LegacyFedAvg):\n    pass\n"
    )
    monkeypatch.chdir(tmp_path)
    # as under the `fedcl` console script: the working directory is not on sys.path
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert strategy_class("my_cwd_strategies:CountingFedAvg").__name__ == "CountingFedAvg"
    with pytest.raises(FedclError, match=r"legacy flwr.server.strategy API.*serverapp"):
        strategy_class("my_cwd_strategies:Legacy")


@pytest.mark.parametrize("name", sorted(STRATEGIES.builtin))
def test_every_builtin_builds_itself_from_the_config(name):
    # none falls back to the plug-in path (sampling settings only)
    assert issubclass(strategy_class(name), Configurable)


def test_a_plugin_strategy_declares_keys_and_a_hospital_half_in_its_module(federation):
    name = "plugin_strategy:PullToRound"
    config = load_config({"strategy": name, "pull-round": 2, "pull-weight": 0.5, "clients": 2})
    assert config.to_mapping()["pull-round"] == 2
    with pytest.raises(FedclError, match="'pull-weight' must be >= 0, got -1"):
        load_config({"strategy": name, "pull-weight": -1})
    with pytest.raises(FedclError, match="unknown key 'pull-rond'.*Did you mean 'pull-round'"):
        load_config({"strategy": name, "pull-rond": 2})
    # Flower's run config holds only the keys pyproject declares: a plug-in's travel packed
    flower = flower_run_config(config)
    assert "pull-round" not in flower and "pull-round = 2" in flower["plugin-keys"]
    assert from_flower_run_config(flower) == (config, False)
    strategy = build_strategy(config)
    assert type(strategy.inner).__name__ == "PullToRound" and strategy.inner.pull_round == 2
    half = hospital_half_of(strategy_class(name))
    model = build_model("unet", NUM_CLASSES)
    arrays = ArrayRecord(federation[0])
    sent_train = ConfigRecord(config.to_mapping())
    first, second = (
        list(strategy.configure_train(r, arrays, sent_train, FakeGrid(2)))[0] for r in (1, 2)
    )
    now = local_round(config, 0, 1, **message_parts(first))
    assert half(now).penalties(model) == []  # round 1: no anchor yet
    now = local_round(config, 0, 2, **message_parts(second))
    (pull,) = half(now).penalties(model)  # round 2: the anchor is the model sent in round 2
    model.load_state_dict(federation[0])
    assert float(pull(None, None).detach()) == 0.0


def test_the_joint_bound_trains_on_every_stage_seen_each_kept_once(monkeypatch):
    from fedcl.scenarios.builtin import CatastrophicForgetting
    from fedcl.strategies.bounds import JointHospital

    config = load_config(
        {"strategy": "joint", "scenario": "catastrophic-forgetting", "stages": 3}
        | {"rounds-per-stage": 2, "clients": 2, "image-size": 32, "train-tiles": 4}
    )
    expected = {r: scenario_of(config).train_dataset(1, r) for r in (1, 2, 4, 5)}
    calls = []
    real = CatastrophicForgetting.train_dataset

    def counting(self, hospital, server_round):
        calls.append(server_round)
        return real(self, hospital, server_round)

    monkeypatch.setattr(CatastrophicForgetting, "train_dataset", counting)
    state = RecordDict()

    def tiles(server_round):
        parts = {"sent": ConfigRecord(), "content": RecordDict(), "state": state}
        now = local_round(config, 1, server_round, **parts, training=True)
        return JointHospital(now).training_tiles(now.train_tiles(server_round)).images

    assert tiles(1).tobytes() == expected[1].images.tobytes()  # stage 0: its own tiles
    stage_2 = np.concatenate([expected[r].images for r in (2, 4, 5)])  # each stage's last
    assert tiles(5).tobytes() == stage_2.tobytes()
    generated = len(calls)
    assert tiles(6).tobytes() == stage_2.tobytes() and len(calls) == generated  # kept


def test_the_joint_bound_under_the_class_shift_annotates_every_class_known_so_far():
    from fedcl.scenarios.tiles import hospital_dataset, stage_classes
    from fedcl.strategies.bounds import JointHospital

    config = load_config(
        {"strategy": "joint", "scenario": "catastrophic-forgetting", "stage-shift": "classes"}
        | {"stages": 3, "rounds-per-stage": 2, "clients": 2, "image-size": 32, "train-tiles": 8}
    )
    first, second, third = (set(stage_classes(config, s)) for s in range(3))
    parts = {"sent": ConfigRecord(), "content": RecordDict(), "state": RecordDict()}
    now = local_round(config, 1, 3, **parts, training=True)  # round 3: the second stage
    own = now.train_tiles(3).masks
    got = JointHospital(now).training_tiles(now.train_tiles(3)).masks
    known = tuple(sorted(first | second))
    relabelled = [hospital_dataset(config, 1, "train", stage=s, classes=known) for s in (0, 1)]
    assert np.array_equal(got, np.concatenate([t.masks for t in relabelled]))
    # the stage's own masks call the first stage's classes background; the bound's do not,
    # and annotate no class of a stage to come
    assert set(np.unique(own).tolist()) <= {0} | second
    assert set(np.unique(got).tolist()) & first
    assert not set(np.unique(got).tolist()) & third
    # a stage later the kept tiles are annotated again, with the third stage's classes too
    now = local_round(config, 1, 5, **parts, training=True)
    got = JointHospital(now).training_tiles(now.train_tiles(5)).masks
    every = tuple(sorted(first | second | third))
    relabelled = [hospital_dataset(config, 1, "train", stage=s, classes=every) for s in (0, 1, 2)]
    assert np.array_equal(got, np.concatenate([t.masks for t in relabelled]))


def test_the_local_only_bound_keeps_every_weight_of_its_own_model():
    from fedcl.strategies.bounds import LocalOnlyHospital

    config = load_config({"strategy": "local-only"})
    torch.manual_seed(0)
    own, received = build_model("unet", NUM_CLASSES), build_model("unet", NUM_CLASSES)
    state = RecordDict()
    parts = {"sent": ConfigRecord(), "content": RecordDict(), "state": state, "training": True}
    LocalOnlyHospital(local_round(config, 0, 1, **parts)).trained(own)
    LocalOnlyHospital(local_round(config, 0, 2, **parts)).received(received)
    mine, got = own.state_dict(), received.state_dict()
    assert all(torch.equal(got[k], mine[k]) for k in mine)
    assert LocalOnlyHospital.keeps_weights  # so the server cannot score it (evaluation)
