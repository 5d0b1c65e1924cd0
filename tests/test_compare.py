"""End to end: a user's scenario file, fedcl compare, fedcl report (real Ray runs)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import tomli_w

from fedcl.cli import main
from fedcl.compare import run_all, run_scenarios, write_comparison
from fedcl.config import RunConfig
from fedcl.configure import load_config
from fedcl.entries import parse_entry
from fedcl.processes import processes_with_env, stop_tagged
from fedcl.recorder import read_metrics
from fedcl.strategies.dbc import DBCSettings

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
]
# DBC's own flag: a flag where the command names DBC
DBC_TINY = [*TINY, "--dbc-pixels-per-image", "64"]


def test_a_users_scenario_file_runs_end_to_end(tmp_path, ray_address):
    scenario = tmp_path / "my-hospitals.toml"
    scenario.write_text(
        'scenario = "drift-and-forgetting"\nclients = 4\ndrift-kind = "blur"\n'
        "drift-ratio = 0.5\nstages = 2\nrounds-per-stage = 1\nrounds = 2\n"
    )
    out = tmp_path / "run"
    assert (
        main(["run", "--config", str(scenario), "--strategy", "dbc", "--out", str(out), *DBC_TINY])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "drift-and-forgetting" and summary["rounds"] == 2
    assert len(summary["dice_per_hospital"]) == 4
    assert len(summary["dice_matrix"]) == 2 and len(summary["dice_matrix"][0]) == 2
    assert summary["acc"] == pytest.approx(sum(summary["dice_matrix"][1]) / 2)
    local = summary["dice_matrix_own_stats"]  # the same with the hospitals' own statistics
    assert len(local) == 2 and summary["acc_own_stats"] == pytest.approx(sum(local[1]) / 2)
    assert summary["forgetting_own_stats"] == pytest.approx(local[0][0] - local[1][0])
    assert set(summary["detection"]) == {"precision", "recall"}
    records = read_metrics(out)
    assert [r["stage"] for r in records] == [0, 0, 1]
    assert records[0]["dice_per_stage"][1] is None  # stage 1 not seen at round 0
    assert (out / "dice_matrix.png").exists()


def _commands(pids):
    return [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:150] for pid in pids]


def test_a_terminated_comparison_leaves_no_ray_process_behind(tmp_path):
    # the shared Ray head's daemons outlived a SIGTERM once a run had started: Ray's
    # driver handles SIGTERM itself and ends the process without unwinding Python
    mark = f"FEDCL_TEST_MARK_{uuid.uuid4().hex}"  # every process compare starts inherits it
    args = ["compare", "--strategies", "fedavg", "--seeds", "0", "--clients", "2"]
    process = subprocess.Popen(
        [sys.executable, "-m", "fedcl", *args, "--rounds", "50", *TINY, "--out", str(tmp_path)],
        env=os.environ | {mark: "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        metrics = tmp_path / "fedavg-s0" / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):  # round 1 done
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        started = processes_with_env(mark)
        assert len(started) > 3, _commands(started)  # compare, its watcher, Ray's processes
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
        deadline = time.monotonic() + 60
        while processes_with_env(mark) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_with_env(mark) == [], _commands(processes_with_env(mark))
    finally:
        process.kill()
        stop_tagged(mark)


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
    assert "acc_own_stats" in table and "forgetting_own_stats" in table
    assert (out / "comparison.png").exists()

    # fedcl report rebuilds the same table from the run directories alone
    (out / "results.csv").unlink()
    assert main(["report", str(out)]) == 0
    with (out / "results.csv").open() as handle:
        assert {row["strategy"]: row for row in csv.DictReader(handle)} == rows


def test_report_rebuilds_a_runs_summary(tmp_path, ray_address, capsys):
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
    for name in ("summary.json", "dice.png"):
        (out / name).unlink()
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text()) == before
    shown = capsys.readouterr().out  # read as a person would, not raw JSON
    assert f"run: final Dice {before['final_dice']:.3f} after 1 rounds" in shown
    assert (out / "dice.png").exists()
    assert not (out / "dice_matrix.png").exists()  # one stage (iid): no 1 x 1 heat map


def test_report_on_an_empty_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither a run directory" in capsys.readouterr().err


def _fake_run(calls):
    """A stand-in for fedcl run: records the call, writes config.toml and a summary."""

    def run(config, resume):
        calls.append((config, resume))
        out = Path(config.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.toml").write_bytes(tomli_w.dumps(config.to_mapping()).encode())
        summary = {
            "final_dice": 0.5
            + 0.1 * config.seed
            + (0.2 if config.section(DBCSettings).consolidation == "off" else 0),
            "strategy": config.strategy,
            "scenario": config.scenario,
            "seed": config.seed,
            "rounds": config.rounds,
        }
        (out / "summary.json").write_text(json.dumps(summary))
        (out / "metrics.jsonl").write_text("")

    return run


def test_entries_carry_their_own_settings_and_get_a_row_each(tmp_path):
    entries = [parse_entry("fedavg"), parse_entry("dbc+dbc-consolidation=off+dbc-steps=20")]
    assert entries[1].strategy == "dbc"
    assert entries[1].settings == {"dbc-consolidation": "off", "dbc-steps": 20}
    calls = []
    dirs = run_all(RunConfig(rounds=2), entries, [0, 1], tmp_path, _fake_run(calls))
    assert [d.name for d in dirs] == [
        "fedavg-s0",
        "fedavg-s1",
        "dbc+dbc-consolidation=off+dbc-steps=20-s0",
        "dbc+dbc-consolidation=off+dbc-steps=20-s1",
    ]
    variant = calls[2][0]
    assert variant.strategy == "dbc" and variant.rounds == 2
    assert variant.section(DBCSettings).steps == 20
    table = write_comparison(tmp_path)
    # rows in the command's order, not the alphabet's; the workload said once
    assert list(table) == ["fedavg", "dbc+dbc-consolidation=off+dbc-steps=20"]
    text = (tmp_path / "results.md").read_text()
    assert text.index("| fedavg |") < text.index("| dbc+dbc-consolidation")
    assert "Workload: 5 hospitals, 2 rounds of 1 local epoch(s)" in text
    assert table["dbc+dbc-consolidation=off+dbc-steps=20"]["final_dice"][0] == pytest.approx(0.75)


def test_a_comparison_run_again_keeps_complete_runs_and_resumes_interrupted_ones(tmp_path):
    entries = [parse_entry("fedavg")]
    calls = []
    run_all(RunConfig(rounds=2), entries, [0, 1], tmp_path, _fake_run(calls))
    (tmp_path / "fedavg-s1" / "summary.json").unlink()  # killed after its checkpoint
    (tmp_path / "fedavg-s1" / "checkpoint.pt").write_bytes(b"")
    calls.clear()
    run_all(RunConfig(rounds=2), entries, [0, 1], tmp_path, _fake_run(calls))
    assert [(c.seed, resume) for c, resume in calls] == [(1, True)]
    calls.clear()  # a summary of fewer rounds than the config's is not a finished run
    summary = json.loads((tmp_path / "fedavg-s0" / "summary.json").read_text())
    (tmp_path / "fedavg-s0" / "summary.json").write_text(json.dumps(summary | {"rounds": 1}))
    run_all(RunConfig(rounds=2), entries, [0, 1], tmp_path, _fake_run(calls))
    assert [(c.seed, resume) for c, resume in calls] == [(0, False)]
    calls.clear()  # a different config: the old runs are not this comparison's, run again
    run_all(RunConfig(rounds=3), entries, [0], tmp_path, _fake_run(calls))
    assert [(c.seed, c.rounds, resume) for c, resume in calls] == [(0, 3, False)]


def test_a_changed_dbc_setting_reruns_dbc_runs_only(tmp_path):
    entries = [parse_entry("fedavg"), parse_entry("dbc")]
    calls = []
    run_all(RunConfig(rounds=2), entries, [0], tmp_path, _fake_run(calls))
    calls.clear()  # FedAvg does not read dbc-tau: its finished run is still this one
    tuned = RunConfig(rounds=2, sections=(DBCSettings(tau=9.0),))
    run_all(tuned, entries, [0], tmp_path, _fake_run(calls))
    assert [(c.strategy, c.section(DBCSettings).tau) for c, _ in calls] == [("dbc", 9.0)]


def test_several_scenarios_get_a_table_each_and_an_overview(tmp_path, capsys):
    calls = []
    run_scenarios(
        RunConfig(rounds=3),
        ["iid", "client-drift"],
        [parse_entry("fedavg")],
        [0],
        tmp_path,
        _fake_run(calls),
    )
    assert [c.scenario for c, _ in calls] == ["iid", "client-drift"]
    assert (tmp_path / "iid" / "results.md").exists()
    assert (tmp_path / "client-drift" / "results.csv").exists()
    overview = (tmp_path / "results.md").read_text()
    assert "## scenario iid" in overview and "## scenario client-drift" in overview
    header = "| strategy | iid: final_dice | client-drift: final_dice | client-drift: precision |"
    assert header in overview
    assert "| fedavg | 0.500 | 0.500 | n/a | n/a |" in overview
    (tmp_path / "results.md").unlink()
    assert main(["report", str(tmp_path)]) == 0  # rebuilt from the runs alone
    assert (tmp_path / "results.md").read_text() == overview
    # a later command naming one scenario adds its directory, and the overview grows
    run_scenarios(
        RunConfig(rounds=3, rounds_per_stage=1),
        ["catastrophic-forgetting"],
        [parse_entry("fedavg")],
        [0],
        tmp_path,
        _fake_run(calls),
    )
    assert (tmp_path / "catastrophic-forgetting" / "fedavg-s0").is_dir()
    assert not (tmp_path / "fedavg-s0").exists()
    assert "## scenario catastrophic-forgetting" in (tmp_path / "results.md").read_text()
    assert "## scenario iid" in (tmp_path / "results.md").read_text()
    # a command stopped before its scenario's table: the next one writes it
    (tmp_path / "client-drift" / "results.md").unlink()
    run_scenarios(
        RunConfig(rounds=3), ["iid"], [parse_entry("fedavg")], [0], tmp_path, _fake_run(calls)
    )
    assert (tmp_path / "client-drift" / "results.md").exists()
    assert "## scenario client-drift" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "dbc+dbc-stepz=3"], "Did you mean 'dbc-steps'?"),
        (["--strategies", "dbc+dbc-steps=many"], "dbc-steps must be int, got 'many'"),
        (["--strategies", "dbc+seed=3"], "set by fedcl compare"),
        (["--strategies", "fedavgg"], "Did you mean 'fedavg'?"),
        (["--strategies", "all", "--scenarios", "iid,drift"], "unknown scenario 'drift'"),
    ],
)
def test_bad_comparison_entries_are_clear_errors_before_any_run(tmp_path, capsys, args, message):
    assert main(["compare", *args, "--out", str(tmp_path / "cmp")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_the_same_compare_command_continues_the_same_comparison(tmp_path, monkeypatch, capsys):
    import contextlib

    import fedcl.compare
    import fedcl.processes

    outs = []

    def fake_run_scenarios(base, scenarios, entries, seeds, out, run):
        outs.append(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.md").write_text("table\n")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fedcl.compare, "run_scenarios", fake_run_scenarios)
    monkeypatch.setattr(fedcl.processes, "local_cluster", lambda: contextlib.nullcontext(""))
    command = ["compare", "--strategies", "fedavg,dbc", "--seeds", "0,1", "--clients", "3"]
    assert main(command) == 0 and main(command) == 0
    assert outs[0] == outs[1] and outs[0].name.startswith("compare-iid-")
    assert "continuing" in capsys.readouterr().out
    assert main([*command[:-1], "4"]) == 0  # other settings: another comparison
    assert outs[2] != outs[0]


def test_the_workload_line_names_the_stages_of_a_staged_comparison(tmp_path):
    import tomli_w

    from fedcl.compare import workload

    staged = {"scenario": "catastrophic-forgetting", "stages": 2, "rounds-per-stage": 3}
    config = load_config(staged)
    (tmp_path / "fedavg-s0").mkdir()
    (tmp_path / "fedavg-s0" / "config.toml").write_text(tomli_w.dumps(config.to_mapping()))
    line = workload(tmp_path)
    assert "6 rounds (2 stages of 3, stage shift tissue) of 1 local epoch(s)" in line
