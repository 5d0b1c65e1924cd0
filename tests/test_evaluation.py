"""Hospital-side evaluation, local statistics and the normalisation a hospital keeps."""

from __future__ import annotations

import math

import pytest
import torch
from flwr.app import ConfigRecord, RecordDict

from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES
from fedcl.errors import FedclError
from fedcl.evaluation import (
    HospitalFigures,
    evaluate_hospital,
    evaluated_stages,
    round_evaluation,
)
from fedcl.hospital import local_test_sets
from fedcl.metrics import summarize
from fedcl.models import build_model
from fedcl.normalization import has_running_stats, local_norm_keys
from fedcl.scenarios import scenario_of
from fedcl.strategies.fedbn import LocalNormHospital, LocalStatisticsHospital
from fedcl.strategies.hospital_half import HospitalHalf, LocalRound
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


def figures(stages, dice, local=None, loss=None):
    n = len(stages)
    return HospitalFigures(
        stages=tuple(stages),
        dice=tuple(dice),
        dice_local_stats=tuple(local if local is not None else [math.nan] * n),
        loss=tuple(loss if loss is not None else [1.0] * n),
        tiles=(4,) * n,
    )


def test_figures_survive_the_message_record():
    sent = figures([0, 1], [0.5, math.nan], [0.6, 0.7], [1.5, 2.5])
    back = HospitalFigures.from_record(sent.to_record())
    assert back.stages == sent.stages and back.tiles == sent.tiles
    assert back.dice[0] == 0.5 and math.isnan(back.dice[1])
    assert back.dice_local_stats == (0.6, 0.7) and back.loss == (1.5, 2.5)


def test_round_evaluation_averages_hospitals_over_the_stages_seen():
    config = STAGED.replace(clients=2)
    # round 3 is in stage 1: stages 0 and 1 are seen
    got = round_evaluation(
        config,
        3,
        {
            0: figures([0, 1], [0.2, 0.4], [0.3, 0.5], [1.0, 3.0]),
            1: figures([0, 1], [0.6, 0.8], [0.7, 0.9], [2.0, 4.0]),
        },
    )
    assert got["stage"] == 1
    assert got["dice_per_hospital"] == pytest.approx([0.3, 0.7])
    assert got["dice"] == pytest.approx(0.5)
    assert got["dice_per_stage"][:2] == pytest.approx([0.4, 0.6])
    assert got["dice_per_stage"][2] is None  # not evaluated in this round
    assert got["dice_local_stats"] == pytest.approx(0.6)
    assert got["dice_per_stage_local_stats"][:2] == pytest.approx([0.5, 0.7])
    assert got["test_loss"] == pytest.approx(2.5)
    assert "not_evaluated" not in got


def test_a_hospital_that_sent_no_figures_is_named_and_left_out():
    config = RunConfig(clients=3)
    got = round_evaluation(config, 1, {0: figures([0], [0.2]), 2: figures([0], [0.4])})
    assert got["dice_per_hospital"][1] is None
    assert got["dice"] == pytest.approx(0.3)
    assert got["not_evaluated"] == [1]
    assert got["dice_local_stats"] is None  # NaN everywhere: no running statistics


def test_local_statistics_are_the_statistics_of_the_hospitals_own_images():
    torch.manual_seed(0)
    model = build_model("unet", NUM_CLASSES)
    recompute_batchnorm(model, random_tiles(seed=1), 4)  # statistics of other images
    before = {k: v.clone() for k, v in model.state_dict().items()}
    data = random_tiles(seed=2)
    got = evaluate_hospital(model, {0: data}, batch_size=4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # untouched
    assert got.dice == (evaluate(model, data).dice,)
    adapted = build_model("unet", NUM_CLASSES)
    adapted.load_state_dict(before)
    recompute_batchnorm(adapted, data, 4)
    assert got.dice_local_stats == (evaluate(adapted, data).dice,)
    assert got.tiles == (8,) and got.stages == (0,)


def test_a_model_without_running_statistics_has_no_local_statistics_figure():
    model = build_model("unet-instance", NUM_CLASSES)
    assert not has_running_stats(model) and local_norm_keys(model, "layers") == []
    got = evaluate_hospital(model, {0: random_tiles()}, batch_size=4)
    assert math.isnan(got.dice_local_stats[0]) and not math.isnan(got.dice[0])


def test_summary_reports_continual_figures_with_local_statistics():
    config = STAGED.replace(stages=2, rounds=4)
    records = [
        {"round": 2, "dice": 0.5, "dice_per_stage": [0.8, 0.1]},
        {"round": 4, "dice": 0.5, "dice_per_stage": [0.3, 0.7]},
    ]
    records[0]["dice_per_stage_local_stats"] = [0.8, 0.2]
    records[1]["dice_per_stage_local_stats"] = [0.6, 0.7]
    summary = summarize(config, records)
    assert summary["forgetting"] == pytest.approx(0.5)
    assert summary["dice_matrix_local_stats"] == [[0.8, 0.2], [0.6, 0.7]]
    assert summary["acc_local_stats"] == pytest.approx(0.65)
    assert summary["forgetting_local_stats"] == pytest.approx(0.2)
    assert summary["bwt_local_stats"] == pytest.approx(-0.2)
    for record in records:  # instance norm: every local figure null
        record["dice_per_stage_local_stats"] = [None, None]
    summary = summarize(config, records)
    assert summary["dice_matrix_local_stats"] is None and summary["acc_local_stats"] is None


@pytest.mark.parametrize(
    ("half", "local_parts"),
    [
        (LocalNormHospital, {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}),  # noqa: E501
        (LocalStatisticsHospital, {"running_mean", "running_var", "num_batches_tracked"}),
        (HospitalHalf, set()),
    ],
)
def test_a_hospital_keeps_its_normalisation_and_puts_it_back(half, local_parts):
    # FedBN's and SiloBN's hospital halves (and the default, which keeps nothing)
    mode = getattr(half, "mode", "none")
    torch.manual_seed(0)
    hospital, global_model = build_model("unet", NUM_CLASSES), build_model("unet", NUM_CLASSES)
    recompute_batchnorm(hospital, random_tiles(), 4)
    shared = {k: v.clone() for k, v in global_model.state_dict().items()}
    now = LocalRound(RunConfig(), 0, 1, ConfigRecord(), RecordDict(), RecordDict())
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


def test_the_matrix_plot_shows_local_statistics_beside_the_figures_as_run(tmp_path):
    from PIL import Image

    from fedcl.plots import plot_dice_matrix

    matrix = [[0.8, 0.1], [0.3, 0.7]]
    plot_dice_matrix(matrix, tmp_path / "one.png")
    plot_dice_matrix(matrix, tmp_path / "two.png", local=[[0.8, 0.5], [0.7, 0.7]])
    one, two = (Image.open(tmp_path / name).size for name in ("one.png", "two.png"))
    assert two[0] > 1.6 * one[0]  # a second panel
