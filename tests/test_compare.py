"""End to end: a user's scenario file, fedcl compare, fedcl report (real Ray runs)."""

from __future__ import annotations

import csv
import json

import pytest

from fedcl.cli import main
from fedcl.recorder import read_metrics

TINY = [
    "--image-size",
    "32",
    "--train-tiles",
    "12",
    "--test-tiles",
    "6",
    "--batch-size",
    "6",
    "--reference-size",
    "4",
    "--dbc-pixels-per-image",
    "64",
]


def test_a_users_scenario_file_runs_end_to_end(tmp_path, ray_address):
    scenario = tmp_path / "my-hospitals.toml"
    scenario.write_text(
        'scenario = "drift-and-forgetting"\nclients = 4\ndrift-kind = "blur"\n'
        "drift-ratio = 0.5\nstages = 2\nrounds-per-stage = 1\nrounds = 2\n"
    )
    out = tmp_path / "run"
    assert (
        main(["run", "--config", str(scenario), "--strategy", "dbc", "--out", str(out), *TINY]) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "drift-and-forgetting" and summary["rounds"] == 2
    assert len(summary["dice_per_hospital"]) == 4
    assert len(summary["dice_matrix"]) == 2 and len(summary["dice_matrix"][0]) == 2
    assert summary["acc"] == pytest.approx(sum(summary["dice_matrix"][1]) / 2)
    assert set(summary["detection"]) == {"precision", "recall"}
    records = read_metrics(out)
    assert [r["stage"] for r in records] == [0, 0, 1]
    assert records[0]["dice_per_stage"][1] is None  # stage 1 not seen at round 0
    assert (out / "dice_matrix.png").exists()


def test_compare_writes_a_table_matching_the_runs(tmp_path, ray_address):
    out = tmp_path / "cmp"
    assert (
        main(
            [
                "compare",
                "--strategies",
                "fedavg,fedmedian",
                "--seeds",
                "0,1",
                "--scenario",
                "client-drift",
                "--clients",
                "3",
                "--rounds",
                "2",
                "--out",
                str(out),
                *TINY,
            ]
        )
        == 0
    )
    runs = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/summary.json")}
    assert sorted(runs) == ["fedavg-s0", "fedavg-s1", "fedmedian-s0", "fedmedian-s1"]
    with (out / "results.csv").open() as handle:
        rows = {row["strategy"]: row for row in csv.DictReader(handle)}
    for strategy in ("fedavg", "fedmedian"):
        dice = [runs[f"{strategy}-s{s}"]["final_dice"] for s in (0, 1)]
        assert float(rows[strategy]["final_dice_mean"]) == pytest.approx(sum(dice) / 2)
        spread = abs(dice[0] - dice[1]) / 2**0.5  # sample std of two values
        assert float(rows[strategy]["final_dice_std"]) == pytest.approx(spread)
        assert rows[strategy]["seeds"] == "0 1"
    table = (out / "results.md").read_text()
    assert "| fedavg | 0,1 |" in table and "| fedmedian | 0,1 |" in table
    assert (out / "comparison.png").exists()

    # fedcl report rebuilds the same table from the run directories alone
    (out / "results.csv").unlink()
    assert main(["report", str(out)]) == 0
    with (out / "results.csv").open() as handle:
        assert {row["strategy"]: row for row in csv.DictReader(handle)} == rows


def test_report_rebuilds_a_runs_summary(tmp_path, ray_address):
    out = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "--clients",
                "2",
                "--rounds",
                "1",
                "--out",
                str(out),
                "--ray-address",
                ray_address,
                *TINY,
            ]
        )
        == 0
    )
    before = json.loads((out / "summary.json").read_text())
    for name in ("summary.json", "dice.png", "dice_matrix.png"):
        (out / name).unlink()
    assert main(["report", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text()) == before
    assert (out / "dice.png").exists() and (out / "dice_matrix.png").exists()


def test_report_on_an_empty_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err
