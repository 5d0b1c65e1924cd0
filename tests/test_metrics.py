import pytest

from fedcl.config import RunConfig
from fedcl.metrics import (
    boundaries,
    continual_metrics,
    detection,
    hospital_seconds,
    round_parts,
    summarize,
)
from fedcl.progress import summary_lines
from fedcl.recorder import RunRecorder


def test_continual_metrics_on_a_hand_made_matrix():
    matrix = [
        [0.8, 0.1, 0.0],
        [0.5, 0.7, 0.2],
        [0.4, 0.6, 0.9],
    ]
    result = continual_metrics(matrix)
    assert result["acc"] == pytest.approx((0.4 + 0.6 + 0.9) / 3)
    assert result["bwt"] == pytest.approx(((0.4 - 0.8) + (0.6 - 0.7)) / 2)
    # forgetting: max over earlier rows minus final, for stages 0 and 1
    assert result["forgetting"] == pytest.approx(((0.8 - 0.4) + (0.7 - 0.6)) / 2)
    assert result["newest"] == 0.9  # the last stage's Dice at the end


def test_no_forgetting_when_old_stages_improve():
    result = continual_metrics([[0.5, 0.0], [0.7, 0.6]])
    assert result["bwt"] == pytest.approx(0.2)
    assert result["forgetting"] == pytest.approx(-0.2)


def test_single_stage_has_acc_but_no_bwt_or_forgetting():
    expected = {"acc": 0.66, "bwt": None, "forgetting": None, "newest": 0.66}
    assert continual_metrics([[0.66]]) == expected


def record(round_, hospitals, decisions):
    return {"round": round_, "aggregation": {"hospitals": hospitals, "decisions": decisions}}


def test_detection_precision_and_recall_against_the_truly_drifted():
    config = RunConfig(scenario="client-drift", clients=5, drift_ratio=0.4, drift_start_round=2)
    from fedcl.scenarios import scenario_of

    bad = scenario_of(config).drifted_hospitals()
    good = [h for h in range(5) if h not in bad]
    hospitals = list(range(5))

    def decisions(rejected):
        return ["rejected-outlier" if h in rejected else "accepted" for h in hospitals]

    records = [
        record(1, hospitals, decisions({bad[0]})),  # before drift starts: a false positive
        record(2, hospitals, decisions(set(bad))),  # 2 true positives
        record(3, hospitals, decisions({bad[0], good[0]})),  # 1 TP, 1 FP, 1 miss
    ]
    result = detection(config, records)
    assert result["precision"] == pytest.approx(3 / 5)
    assert result["recall"] == pytest.approx(3 / 4)


def test_detection_is_undefined_without_reported_decisions():
    config = RunConfig(scenario="client-drift")
    assert detection(config, [{"round": 1}]) == {"precision": None, "recall": None}


def test_boundary_detection_counts_a_shift_within_one_round_of_a_stage_start():
    # stages start in rounds 4, 7, 10; shifts found in 5 (right), 8 (right), 2 (wrong)
    config = RunConfig(scenario="catastrophic-forgetting", stages=4, rounds_per_stage=3, rounds=12)
    records = [{"round": r, "aggregation": {"shift_started": r in (2, 5, 8)}} for r in range(1, 13)]
    result = boundaries(config, records)
    assert result == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 3),
                      "found": [2, 5, 8]}  # fmt: skip
    # an unstaged run has no boundary: any shift is a false alarm, recall undefined
    iid = RunConfig(scenario="iid", rounds=12)
    assert boundaries(iid, records) == {"precision": 0.0, "recall": None, "found": [2, 5, 8]}
    quiet = [{"round": r, "aggregation": {"shift_started": False}} for r in range(1, 13)]
    assert boundaries(iid, quiet) == {"precision": None, "recall": None, "found": []}
    # a strategy without a shift detector reports nothing
    assert boundaries(config, [{"round": 1}]) == {"precision": None, "recall": None, "found": None}


def test_a_hospitals_round_is_split_into_its_phases_from_round_two_on():
    timed = [
        {"round": 0},
        {"round": 1, "hospital_seconds": {"receive": 9.0, "evaluation": 9.0, "training": 9.0}},
        {"round": 2, "hospital_seconds": {"receive": 0.5, "evaluation": 1.0, "training": 2.5}},
        {"round": 3, "hospital_seconds": {"receive": 0.5, "evaluation": 3.0, "training": 2.5}},
    ]
    result = hospital_seconds(timed)
    assert result == {"receive": 0.5, "evaluation": 2.0, "training": 2.5,
                      "evaluation_share": pytest.approx(0.4)}  # fmt: skip
    assert hospital_seconds(timed[:2]) is None  # round 1 starts the hospitals: not counted
    messages = {"delivery": 4.0, "start": 5.0, "reply": 0.2}  # not the handler's time
    for record in timed[2:]:
        record["hospital_seconds"] |= messages
    assert hospital_seconds(timed) == result | messages
    for record, wall in zip(timed[2:], (20.0, 40.0), strict=True):
        record["wall_seconds"] = wall
    parts = round_parts(timed)  # rounds 2 and 3: medians = means of two
    assert parts == pytest.approx(
        {
            "wall": 30.0,
            "delivery": 4.0,
            "start": 5.0,
            "receive": 0.5,
            "evaluation": 2.0,
            "training": 2.5,
            "reply": 0.2,
            "rest": 15.8,
        }  # fmt: skip
    )
    assert list(parts) == ["wall", "delivery", "start", "receive", "evaluation", "training",
                           "reply", "rest"]  # fmt: skip
    assert round_parts(timed[:2]) is None
    assert hospital_seconds([{"round": r} for r in range(4)]) is None


def test_summary_has_every_design_key():
    config = RunConfig(scenario="catastrophic-forgetting", stages=2, rounds_per_stage=1, rounds=2)
    records = [
        {"round": 0, "dice": 0.1, "dice_per_stage": [0.1, None], "wall_seconds": 1.0},
        {"round": 1, "dice": 0.6, "dice_per_stage": [0.6, 0.2], "wall_seconds": 2.0},
        {"round": 2, "dice": 0.5, "dice_per_stage": [0.3, 0.7], "wall_seconds": 2.5},
    ]
    summary = summarize(config, records)
    for key in (
        "final_dice",
        "dice_matrix",
        "acc",
        "bwt",
        "forgetting",
        "detection",
        "boundaries",
        "extra_bytes_per_round",
        "rounds",
        "wall_seconds",
        "strategy",
        "scenario",
        "seed",
    ):
        assert key in summary
    assert summary["dice_matrix"] == [[0.6, 0.2], [0.3, 0.7]]
    assert summary["forgetting"] == pytest.approx(0.3)
    assert summary["wall_seconds"] == pytest.approx(5.5)
    assert summary["final_dice_last3"] == pytest.approx((0.6 + 0.5) / 2)  # round 0 excluded


def test_a_run_starting_in_a_directory_removes_an_earlier_summary(tmp_path):
    # fedcl compare keeps directories with a summary: an unfinished run must not have one
    (tmp_path / "summary.json").write_text('{"rounds": 15}')
    RunRecorder(RunConfig(out=str(tmp_path)))
    assert not (tmp_path / "summary.json").exists()
    assert (tmp_path / "config.toml").exists() and (tmp_path / "metrics.jsonl").exists()


def test_dbcs_plot_shows_the_movement_the_shifts_found_and_the_stage_starts(tmp_path):
    from PIL import Image

    from fedcl.plots import plot_dbc

    records = [
        {
            "round": r,
            "aggregation": {
                "hospitals": [0, 1],
                "decisions": ["accepted"] * 2,
                "peer_scores": [0.01, 0.02],
                "movement": None if r == 1 else 0.05 * r,
                "shift_started": r == 4,
            },
        }
        for r in range(1, 7)
    ]
    plot_dbc(records, tmp_path / "with.png", boundaries=[4])
    for record in records:
        record["aggregation"]["movement"] = None
    plot_dbc(records, tmp_path / "without.png")
    # one panel more, of the same height, where rounds report a movement
    heights = [Image.open(tmp_path / f"{n}.png").size[1] for n in ("with", "without")]
    assert heights[0] == 2 * heights[1]


def test_a_runs_last_lines_say_where_a_hospitals_round_went():
    summary = {
        "final_dice": 0.7, "rounds": 5, "wall_seconds": 30.0, "dice_matrix": [[0.7]],
        "detection": {}, "acc": None, "bwt": None, "forgetting": None,
    }  # fmt: skip
    handler = {"receive": 0.4, "evaluation": 0.5, "training": 1.1, "evaluation_share": 0.25}
    deployed = handler | {"delivery": 1.9, "start": 0.35, "reply": 0.46}
    lines = summary_lines(summary | {"hospital_seconds": deployed}, "runs/x")
    assert lines[-1].strip() == "its messages: 1.9 s delivery, 0.3 s ClientApp start, 0.5 s reply"
    simulated = handler | {"delivery": 1.2, "start": 0.0, "reply": 0.1}
    lines = summary_lines(summary | {"hospital_seconds": simulated}, "runs/x")
    assert lines[-1].strip() == "its messages: 1.2 s to a free worker, 0.1 s back"
    assert "ClientApp" not in "".join(summary_lines(summary | {"hospital_seconds": handler}, "x"))
