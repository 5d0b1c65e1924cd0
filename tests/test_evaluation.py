"""Hospital-side evaluation, local statistics and the normalisation a hospital keeps."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from flwr.app import ConfigRecord, RecordDict

from fedcl.config import RunConfig
from fedcl.configure import load_config
from fedcl.data import NUM_CLASSES
from fedcl.errors import FedclError
from fedcl.evaluation import (
    HospitalFigures,
    evaluate_hospital,
    evaluated_stages,
    round_evaluation,
)
from fedcl.hospital import local_round, local_test_sets
from fedcl.metrics import summarize, summary_rounds
from fedcl.models import build_model
from fedcl.normalization import has_running_stats, local_norm_keys
from fedcl.plugins import STRATEGIES
from fedcl.scenarios import scenario_of
from fedcl.strategies.contract import hospital_half_of
from fedcl.strategies.fedbn import LocalNormHospital, LocalStatisticsHospital
from fedcl.strategies.hospital_half import HospitalHalf
from fedcl.training import evaluate, recompute_batchnorm
from tests.conftest import random_tiles

STAGED = RunConfig(scenario="catastrophic-forgetting", stages=3, rounds_per_stage=2, rounds=6)


@pytest.mark.parametrize(
    ("config", "server_round", "expected"),
    [
        (RunConfig(rounds=4), 0, [0]),
        (RunConfig(rounds=4), 4, [0]),
        (STAGED, 0, [0]),
        (STAGED, 1, [0]),
        (STAGED, 2, [0, 1, 2]),  # a stage end: a whole row of the matrix
        (STAGED, 3, [0, 1]),
        (STAGED, 6, [0, 1, 2]),
    ],
)
def test_evaluated_stages_are_the_seen_ones_and_every_one_at_a_stage_end(
    config, server_round, expected
):
    assert list(evaluated_stages(config, server_round)) == expected


def test_the_read_rounds_are_the_ones_a_summary_figure_reads():
    default = RunConfig(scenario="catastrophic-forgetting", stages=3, rounds_per_stage=5, rounds=15)
    assert summary_rounds(default) == {4, 5, 9, 10, 13, 14, 15}
    assert summary_rounds(RunConfig(rounds=15)) == {13, 14, 15}
    assert summary_rounds(RunConfig(rounds=2)) == {1, 2}
    read = STAGED.replace(evaluate_rounds="read")  # rounds 1-6, stages end in 2, 4, 6
    assert [list(evaluated_stages(read, r)) for r in range(7)] == [
        [], [0], [0, 1, 2], [0, 1], [0, 1, 2], [0, 1, 2], [0, 1, 2]
    ]  # fmt: skip
    # every-K: those rounds and every K-th (a coarser per-round curve, the same summary)
    every3 = STAGED.replace(rounds=9, stages=3, rounds_per_stage=3, evaluate_rounds="every-3")
    scored = [r for r in range(10) if len(evaluated_stages(every3, r))]
    assert sorted(summary_rounds(every3)) == [2, 3, 5, 6, 7, 8, 9]
    assert scored == [0, 2, 3, 5, 6, 7, 8, 9]  # round 0 and the read rounds; 1 and 4 skipped
    for bad in ("every-1", "every-x", "every3", "some"):
        with pytest.raises(FedclError, match="every, read or every-K"):
            RunConfig(evaluate_rounds=bad)
    # a round scored nowhere: every hospital sent empty figures, no Dice at all
    model = build_model("unet", NUM_CLASSES)
    empty = evaluate_hospital(model, {}, random_tiles(4), batch_size=4)
    assert empty.stages == () and empty.dice_own_stats == ()
    record = round_evaluation(read, 0, {0: empty, 1: empty})
    assert record["dice"] is None and record["dice_per_hospital"] == [None] * read.clients
    assert record["not_evaluated"] == [2, 3, 4]  # those that sent nothing are still named


def figures(stages, dice, own=None, loss=None, oracle=None):
    n = len(stages)
    return HospitalFigures(
        stages=tuple(stages),
        dice=tuple(dice),
        dice_own_stats=tuple(own if own is not None else [math.nan] * n),
        dice_oracle_stats=tuple(oracle if oracle is not None else [math.nan] * n),
        loss=tuple(loss if loss is not None else [1.0] * n),
        tiles=(4,) * n,
    )


def test_figures_survive_the_message_record():
    sent = figures([0, 1], [0.5, math.nan], [0.6, 0.7], [1.5, 2.5], [0.8, 0.9])
    back = HospitalFigures.from_record(sent.to_record())
    assert back.stages == sent.stages and back.tiles == sent.tiles
    assert back.dice[0] == 0.5 and math.isnan(back.dice[1])
    assert back.dice_own_stats == (0.6, 0.7) and back.loss == (1.5, 2.5)
    assert back.dice_oracle_stats == (0.8, 0.9)


def test_round_evaluation_averages_hospitals_over_the_stages_seen():
    config = STAGED.replace(clients=2)
    # round 3 is in stage 1: stages 0 and 1 are seen
    got = round_evaluation(
        config,
        3,
        {
            0: figures([0, 1], [0.2, 0.4], [0.3, 0.5], [1.0, 3.0], [0.1, 0.1]),
            1: figures([0, 1], [0.6, 0.8], [0.7, 0.9], [2.0, 4.0], [0.3, 0.5]),
        },
    )
    assert got["stage"] == 1
    assert got["dice_per_hospital"] == pytest.approx([0.3, 0.7])
    assert got["dice"] == pytest.approx(0.5)
    assert got["dice_per_stage"][:2] == pytest.approx([0.4, 0.6])
    assert got["dice_per_stage"][2] is None  # not evaluated in this round
    assert got["dice_own_stats"] == pytest.approx(0.6)
    assert got["dice_per_stage_own_stats"][:2] == pytest.approx([0.5, 0.7])
    assert got["dice_oracle_stats"] == pytest.approx(0.25)
    assert got["dice_per_hospital_oracle_stats"] == pytest.approx([0.1, 0.4])
    assert got["test_loss"] == pytest.approx(2.5)
    assert "not_evaluated" not in got


def test_a_hospital_that_sent_no_figures_is_named_and_left_out():
    config = RunConfig(clients=3)
    got = round_evaluation(config, 1, {0: figures([0], [0.2]), 2: figures([0], [0.4])})
    assert got["dice_per_hospital"][1] is None
    assert got["dice"] == pytest.approx(0.3)
    assert got["not_evaluated"] == [1]
    assert got["dice_own_stats"] is None  # NaN everywhere: no running statistics


def test_own_statistics_come_from_the_training_tiles_and_oracle_ones_from_the_test_tiles():
    torch.manual_seed(0)
    model = build_model("unet", NUM_CLASSES)
    recompute_batchnorm(model, random_tiles(seed=1), 4)  # statistics of other images
    before = {k: v.clone() for k, v in model.state_dict().items()}
    test, own = random_tiles(seed=2), random_tiles(seed=3)
    got = evaluate_hospital(model, {0: test}, own, batch_size=4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    assert got.dice == (evaluate(model, test).dice,)

    def adapted_to(tiles):
        adapted = build_model("unet", NUM_CLASSES)
        adapted.load_state_dict(before)
        recompute_batchnorm(adapted, tiles, 4)
        return evaluate(adapted, test).dice

    assert got.dice_own_stats == (adapted_to(own),)
    assert got.dice_oracle_stats == (adapted_to(test),)
    assert got.dice_own_stats != got.dice_oracle_stats  # the test can fail
    assert got.tiles == (8,) and got.stages == (0,)


def test_a_model_without_running_statistics_has_no_re_estimated_figure():
    model = build_model("unet-instance", NUM_CLASSES)
    assert not has_running_stats(model) and local_norm_keys(model, "layers") == []
    got = evaluate_hospital(model, {0: random_tiles()}, random_tiles(), batch_size=4)
    assert math.isnan(got.dice_own_stats[0]) and math.isnan(got.dice_oracle_stats[0])
    assert not math.isnan(got.dice[0])


def flat(matrix):
    return [v for row in matrix for v in row]


def test_summary_reads_each_stage_end_on_its_last_two_rounds_in_every_reading():
    config = STAGED.replace(stages=2, rounds=4)
    records = [
        {"round": 1, "dice": 0.4, "dice_per_stage": [0.6, None]},
        {"round": 2, "dice": 0.5, "dice_per_stage": [0.8, 0.1]},
        {"round": 3, "dice": 0.4, "dice_per_stage": [0.5, 0.5]},
        {"round": 4, "dice": 0.5, "dice_per_stage": [0.3, 0.7]},
    ]
    for r, own in zip(records, ([0.7, None], [0.8, 0.2], [0.6, 0.6], [0.6, 0.7]), strict=True):
        r["dice_per_stage_own_stats"] = own
        r["dice_own_stats"] = 0.6
    summary = summarize(config, records)
    # row 0: rounds 1, 2 (stage 1's column only in round 2); row 1: rounds 3, 4
    assert flat(summary["dice_matrix"]) == pytest.approx([0.7, 0.1, 0.4, 0.6])
    assert summary["acc"] == pytest.approx(0.5)
    assert summary["forgetting"] == pytest.approx(0.3)
    assert summary["final_dice"] == pytest.approx(0.45)  # rounds 3 and 4
    assert flat(summary["dice_matrix_own_stats"]) == pytest.approx([0.75, 0.2, 0.6, 0.65])
    assert summary["acc_own_stats"] == pytest.approx(0.625)
    assert summary["forgetting_own_stats"] == pytest.approx(0.15)
    assert summary["bwt_own_stats"] == pytest.approx(-0.15)
    assert summary["final_dice_own_stats"] == pytest.approx(0.6)
    assert summary["dice_matrix_oracle_stats"] is None  # a reading the runs do not have
    assert summary["acc_oracle_stats"] is None
    for record in records:  # instance norm: every re-estimated figure null
        record["dice_per_stage_own_stats"] = [None, None]
    summary = summarize(config, records)
    assert summary["dice_matrix_own_stats"] is None and summary["acc_own_stats"] is None


def test_own_statistics_never_read_a_test_tile_or_an_old_stages_training_tile(monkeypatch):
    # A hospital's messages through its handlers: each model's own-statistics reading is
    # re-estimated on the training tiles of that model's round, nothing else; every
    # other re-estimation is the oracle's, on the tested stage's test tiles.
    from flwr.app import ArrayRecord, Context, Message, MessageType
    from flwr.supercore.task_identity import TaskIdentity

    from fedcl import evaluation
    from fedcl.configure import load_config
    from fedcl.hospital import EVALUATION_KEY, handle_evaluate, handle_train

    for name in ("_task_id", "_run_id", "_node_id"):  # messages are built in a task
        monkeypatch.setattr(TaskIdentity, name, 1)
    config = load_config(
        STAGED.to_mapping()
        | {"stages": 2, "rounds": 4, "clients": 2, "image-size": 32, "train-tiles": 4}
        | {"test-tiles": 2, "batch-size": 2, "device": "cpu"}
    )
    scenario = scenario_of(config)
    train = {r: scenario.train_dataset(1, r).images.tobytes() for r in range(1, 5)}
    test = {s: scenario.test_dataset(1, s).images.tobytes() for s in range(2)}
    seen: list[bytes] = []
    real = evaluation.recompute_batchnorm

    def recording(model, data, batch_size):
        seen.append(data.images.tobytes())
        real(model, data, batch_size)

    monkeypatch.setattr(evaluation, "recompute_batchnorm", recording)
    context = Context(1, 1, {"partition-id": 1, "num-partitions": 2}, RecordDict(), {})
    arrays = ArrayRecord(build_model(config.model, NUM_CLASSES).state_dict())
    for kind, handle, server_round in [
        *((MessageType.TRAIN, handle_train, r) for r in range(1, 5)),
        (MessageType.EVALUATE, handle_evaluate, 4),
    ]:
        seen.clear()
        sent = ConfigRecord(config.to_mapping() | {"server-round": server_round})
        content = RecordDict({"arrays": arrays, "config": sent})
        reply = handle(Message(content=content, message_type=kind, dst_node_id=1), context)
        model_round = server_round - (kind == MessageType.TRAIN)
        stages = evaluated_stages(config, model_round)
        own = train[max(model_round, 1)]
        assert seen[0] == own  # the own reading: this model's round's training tiles
        assert seen[1:] == [test[s] for s in stages]  # the oracle's, one per stage
        assert sum(s == own for s in seen) == 1
        old = {train[r] for r in train if scenario.stage_of(r) < scenario.stage_of(model_round)}
        assert not old & set(seen)
        figures = HospitalFigures.from_record(reply.content.config_records[EVALUATION_KEY])
        assert all(not math.isnan(d) for d in figures.dice_own_stats)
    assert train[2] != train[3]  # the stages' tiles differ: the test can fail


def a_round(strategy, server_round=1, state=None, **keys):
    config = load_config({"strategy": strategy, "image-size": 32, "train-tiles": 4, **keys})
    return local_round(
        config,
        0,
        server_round,
        sent=ConfigRecord(),
        content=RecordDict(),
        state=RecordDict() if state is None else state,
        training=True,
    )


LAYERS = {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}


@pytest.mark.parametrize(
    ("half", "strategy", "local_parts"),
    [
        (LocalNormHospital, "fedbn", LAYERS),
        (LocalStatisticsHospital, "silobn", LAYERS - {"weight", "bias"}),
        (HospitalHalf, "fedavg", set()),
    ],
)
def test_a_hospital_keeps_its_normalisation_and_puts_it_back(half, strategy, local_parts):
    # FedBN's and SiloBN's hospital halves as version 0.3 ran them (the kept statistics
    # put back as they are), and the default, which keeps nothing
    mode = getattr(half, "mode", "none")
    torch.manual_seed(0)
    hospital, global_model = build_model("unet", NUM_CLASSES), build_model("unet", NUM_CLASSES)
    recompute_batchnorm(hospital, random_tiles(), 4)
    shared = {k: v.clone() for k, v in global_model.state_dict().items()}
    keys = {} if strategy == "fedavg" else {"local-stats-refresh": False}
    now = a_round(strategy, **keys)
    half(now).trained(hospital)  # round 1 ends: the hospital keeps its part
    half(now).received(global_model)  # round 2: the next global model arrives
    received = global_model.state_dict()
    own = hospital.state_dict()
    keys = set(local_norm_keys(hospital, mode))
    assert {k.rsplit(".", 1)[1] for k in keys} == local_parts
    for key, value in received.items():
        expected = own[key] if key in keys else shared[key]
        assert torch.equal(value, expected), key
    if mode != "none":
        assert any(not torch.equal(own[k], shared[k]) for k in keys)  # the test can fail


@pytest.mark.parametrize("strategy", ["fedbn", "silobn"])
def test_by_default_a_hospital_re_estimates_the_received_models_statistics(strategy):
    # on its training tiles of the received model's round, with its own layers back in
    torch.manual_seed(0)
    hospital, global_model = build_model("unet", NUM_CLASSES), build_model("unet", NUM_CLASSES)
    recompute_batchnorm(hospital, random_tiles(), 4)
    state = RecordDict()
    half = hospital_half_of(STRATEGIES.load(strategy))
    half(a_round(strategy, 1, state)).trained(hospital)
    now = a_round(strategy, 2, state)
    received = copy.deepcopy(global_model)
    half(now).received(received)
    expected = copy.deepcopy(global_model)
    if strategy == "fedbn":  # its affine weights are the hospital's own
        affine = [k for k in local_norm_keys(hospital, "layers") if k.endswith(("weight", "bias"))]
        expected.load_state_dict({k: hospital.state_dict()[k] for k in affine}, strict=False)
    recompute_batchnorm(expected, now.train_tiles(1), now.config.batch_size)
    for key, value in received.state_dict().items():
        assert torch.equal(value, expected.state_dict()[key]), key
    kept = local_norm_keys(hospital, "statistics")
    assert any(not torch.equal(received.state_dict()[k], hospital.state_dict()[k]) for k in kept)


def test_an_unknown_local_norm_is_a_clear_error():
    with pytest.raises(FedclError, match="Did you mean 'layers'"):
        local_norm_keys(build_model("unet", NUM_CLASSES), "layer")


def test_server_evaluation_needs_data_the_server_can_regenerate():
    with pytest.raises(FedclError, match="holds no hospital data"):
        RunConfig(evaluation="server", data="bcss:/somewhere")
    with pytest.raises(FedclError, match="Did you mean 'hospitals'"):
        RunConfig(evaluation="hospital")


def test_a_hospitals_test_tiles_are_the_servers_regenerated_ones():
    config = RunConfig(clients=2, image_size=32, test_tiles=4)
    state = RecordDict()
    first = local_test_sets(config, 1, 0, state)
    again = local_test_sets(config, 1, 0, state)  # from the hospital's state
    expected = scenario_of(config).test_dataset(1, 0)
    for got in (first[0], again[0]):
        assert got.images.tobytes() == expected.images.tobytes()
        assert got.masks.tobytes() == expected.masks.tobytes()


def test_the_matrix_plot_shows_every_reading_it_is_given_side_by_side(tmp_path):
    from PIL import Image

    from fedcl.plots import plot_dice_matrix

    matrix = [[0.8, 0.1], [0.3, 0.7]]
    plot_dice_matrix({"as run": matrix, "own statistics": None}, tmp_path / "one.png")
    plot_dice_matrix(
        {"as run": matrix, "own statistics": [[0.8, 0.5], [0.7, 0.7]]}, tmp_path / "two.png"
    )
    one, two = (Image.open(tmp_path / name).size for name in ("one.png", "two.png"))
    assert two[0] > 1.6 * one[0]  # a second panel
