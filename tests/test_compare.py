"""End to end: a user's scenario file, fedcl compare, fedcl report (real Ray runs)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import matplotlib.image
import pytest
import tomli_w

import fedcl.compare
from fedcl.cli import main
from fedcl.compare import (
    StudyProgress,
    duration,
    plan_runs,
    run_all,
    run_parallel,
    run_scenarios,
    write_comparison,
)
from fedcl.config import RunConfig
from fedcl.configure import load_config
from fedcl.entries import parse_entry
from fedcl.errors import FedclError
from fedcl.metrics import without_timing
from fedcl.plots import entry_colors, plot_comparison, wrapped_label
from fedcl.plugins import SCENARIOS
from fedcl.processes import local_cluster, processes_with_env, stop_tagged
from fedcl.recorder import read_metrics
from fedcl.scenarios.sections import DriftSettings
from fedcl.strategies.dbc import DBCSettings
from fedcl.study import REPORTING_SEEDS, TUNING_SEEDS, paired, seed_note

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


@pytest.mark.parametrize(
    "stop",
    [
        signal.SIGINT,  # Ctrl-C
        # a real comparison, terminated (~50 s); deployment's is in the default run
        pytest.param(signal.SIGTERM, marks=pytest.mark.slow),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stopped_comparison_exits_and_leaves_no_ray_process_behind(tmp_path, stop):
    # the shared Ray head's daemons outlived a SIGTERM once a run had started: Ray's
    # driver handles SIGTERM itself and ends the process without unwinding Python; after
    # Ctrl-C the process waited forever to join the simulation's threads
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
        process.send_signal(stop)
        code = process.wait(timeout=60)
        if stop == signal.SIGINT:
            assert code == 130  # fedcl's "interrupted"
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


@pytest.mark.slow  # eight Ray runs (~4 min on 2 cores); run_parallel is tested without Ray
def test_parallel_runs_on_a_cluster_are_the_sequential_runs_bit_for_bit(tmp_path, ray_address):
    command = ["compare", "--strategies", "fedavg,dbc", "--seeds", "0,1", "--clients", "2"]
    command += ["--rounds", "2", "--ray-address", ray_address, *DBC_TINY]
    assert main([*command, "--out", str(tmp_path / "one")]) == 0
    assert main([*command, "--parallel", "2", "--out", str(tmp_path / "two")]) == 0
    for run in ("fedavg-s0", "fedavg-s1", "dbc-s0", "dbc-s1"):
        assert (tmp_path / "two" / f"{run}.log").exists()
        assert figures(tmp_path / "one" / run) == figures(tmp_path / "two" / run)


def figures(run_dir):
    """A run's summary and records without their timings."""
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    summary = json.loads((run_dir / "summary.json").read_text())
    return without_timing(summary), [without_timing(json.loads(line)) for line in lines]


@pytest.mark.slow  # a two-node cluster and four Ray runs (~3 min on 2 cores)
def test_a_study_spreads_over_a_two_node_cluster_and_equals_its_sequential_twin(tmp_path):
    import ray  # the test reads the cluster's actor table (Ray's own state, in the GCS)
    from ray._private import state

    command = ["compare", "--strategies", "fedavg", "--seeds", "0,1", "--clients", "2"]
    command += ["--rounds", "2", *TINY]
    # one core a node: the two runs' hospitals can only run at once on different nodes
    with local_cluster(num_cpus=1, nodes=2) as address:
        command += ["--ray-address", address]
        assert main([*command, "--parallel", "2", "--out", str(tmp_path / "two")]) == 0
        ray.init(address=address)
        try:
            nodes = {node["NodeID"] for node in ray.nodes()}
            hosts = {
                actor["Address"]["NodeID"]
                for actor in state.actors().values()
                if actor["ActorClassName"] == "ClientAppActor"
            }
        finally:
            ray.shutdown()
        assert len(nodes) == 2 and hosts == nodes  # every node hosted hospitals
        assert main([*command, "--out", str(tmp_path / "one")]) == 0
    for run in ("fedavg-s0", "fedavg-s1"):
        assert figures(tmp_path / "one" / run) == figures(tmp_path / "two" / run)


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
    own = f"({before['final_dice_own_stats']:.3f} with own statistics)"
    assert f"run: final Dice {before['final_dice']:.3f} {own} after 1 rounds" in shown
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
            + (0.2 if config.section(DBCSettings).consolidation == "always" else 0),
            "strategy": config.strategy,
            "scenario": config.scenario,
            "seed": config.seed,
            "rounds": config.rounds,
        }
        (out / "summary.json").write_text(json.dumps(summary))
        (out / "metrics.jsonl").write_text("")

    return run


def test_entries_carry_their_own_settings_and_get_a_row_each(tmp_path):
    entries = [parse_entry("fedavg"), parse_entry("dbc+dbc-consolidation=always+dbc-steps=20")]
    assert entries[1].name == "dbc" and entries[1].kind == "strategy"
    assert entries[1].settings == {"dbc-consolidation": "always", "dbc-steps": 20}
    calls = []
    dirs = run_all(RunConfig(rounds=2), entries, [0, 1], tmp_path, _fake_run(calls))
    assert [d.name for d in dirs] == [
        "fedavg-s0",
        "fedavg-s1",
        "dbc+dbc-consolidation=always+dbc-steps=20-s0",
        "dbc+dbc-consolidation=always+dbc-steps=20-s1",
    ]
    variant = calls[2][0]
    assert variant.strategy == "dbc" and variant.rounds == 2
    assert variant.section(DBCSettings).steps == 20
    table = write_comparison(tmp_path)
    # rows in the command's order, not the alphabet's; the workload said once
    assert list(table) == ["fedavg", "dbc+dbc-consolidation=always+dbc-steps=20"]
    text = (tmp_path / "results.md").read_text()
    assert text.index("| fedavg |") < text.index("| dbc+dbc-consolidation")
    assert "Workload: 5 hospitals, 2 rounds of 1 local epoch(s)" in text
    variant_row = table["dbc+dbc-consolidation=always+dbc-steps=20"]
    assert variant_row["final_dice"][0] == pytest.approx(0.75)


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
    calls.clear()  # the folder moved (a fresh clone elsewhere): its runs are still complete
    shutil.copytree(tmp_path, tmp_path.parent / "moved")
    run_all(RunConfig(rounds=2), entries, [0, 1], tmp_path.parent / "moved", _fake_run(calls))
    assert calls == []
    calls.clear()  # a different config: the old runs are not this comparison's, run again
    run_all(RunConfig(rounds=3), entries, [0], tmp_path, _fake_run(calls))
    assert [(c.seed, c.rounds, resume) for c, resume in calls] == [(0, 3, False)]


def test_a_run_that_scored_every_round_serves_a_comparison_that_reads_fewer(tmp_path):
    entries, calls = [parse_entry("fedavg")], []
    run_all(RunConfig(rounds=2), entries, [0], tmp_path, _fake_run(calls))
    calls.clear()  # every figure of a read-rounds run is in it: kept
    read = RunConfig(rounds=2, evaluate_rounds="read")
    run_all(read, entries, [0], tmp_path, _fake_run(calls))
    run_all(read.replace(evaluate_rounds="every-2"), entries, [0], tmp_path, _fake_run(calls))
    assert calls == []
    run_all(read, entries, [1], tmp_path, _fake_run(calls))  # but not the other way round
    calls.clear()
    run_all(RunConfig(rounds=2), entries, [1], tmp_path, _fake_run(calls))
    assert [(c.seed, c.evaluate_rounds) for c, _ in calls] == [(1, "every")]


def test_a_changed_dbc_setting_reruns_dbc_runs_only(tmp_path):
    entries = [parse_entry("fedavg"), parse_entry("dbc")]
    calls = []
    run_all(RunConfig(rounds=2), entries, [0], tmp_path, _fake_run(calls))
    calls.clear()  # FedAvg does not read dbc-tau: its finished run is still this one
    tuned = RunConfig(rounds=2, sections=(DBCSettings(tau=9.0),))
    run_all(tuned, entries, [0], tmp_path, _fake_run(calls))
    assert [(c.strategy, c.section(DBCSettings).tau) for c, _ in calls] == [("dbc", 9.0)]


def test_a_study_says_which_run_it_is_on_and_how_long_the_rest_will_take(tmp_path, capsys):
    assert [duration(s) for s in (42, 306, 7500)] == ["42 s", "5.1 min", "2 h 05 min"]
    calls = []
    entries = [parse_entry("fedavg"), parse_entry("dbc")]
    base, unset = RunConfig(), ("rounds",)  # each scenario its own length: 15 and 6
    scenarios = _scenarios("iid", "catastrophic-forgetting+rounds-per-stage=2")
    # made before: fedavg in both scenarios (kept), dbc in the staged one (half, resumed)
    run_scenarios(base, scenarios, entries[:1], [0], tmp_path, _fake_run(calls), unset=unset)
    staged = tmp_path / "catastrophic-forgetting+rounds-per-stage=2"
    config = parse_entry("dbc").config(calls[-1][0]).replace(seed=0, out=str(staged / "dbc-s0"))
    _fake_run([])(config, False)
    (staged / "dbc-s0" / "summary.json").unlink()
    (staged / "dbc-s0" / "checkpoint.pt").write_bytes(b"")
    capsys.readouterr()
    clock = iter([0.0, 100.0, 130.0, 150.0, 190.0, 400.0])  # start, iid dbc, staged dbc, end
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fedcl.compare.time, "monotonic", lambda: next(clock))
        run_scenarios(base, scenarios, entries, [0], tmp_path, _fake_run(calls), unset=unset)
    lines = [line for line in capsys.readouterr().out.splitlines() if "fedcl compare:" in line]
    assert lines[0].endswith("iid/fedavg-s0 is complete, kept")
    assert lines[1] == "fedcl compare: run 3 of 4 (2 kept)"  # both kept runs counted up front
    assert lines[2].endswith("fedavg-s0 is complete, kept")
    # 30 s for iid's 15 rounds: 2 s a round; the staged run has 6
    assert lines[3] == (
        "fedcl compare: run 4 of 4 (2 kept, 1 made), resumed · 12 s a run of its length"
        " · about 12 s to go"
    )
    assert lines[4] == "fedcl compare: 4 runs, 2 kept, 2 made in 6.7 min"
    assert calls[-1][1] is True  # resumed from its checkpoint


def test_parallel_runs_go_n_at_a_time_and_a_failure_stops_the_others(tmp_path, capsys):
    calls = []
    entries = [parse_entry("fedavg"), parse_entry("dbc")]
    runs = plan_runs(RunConfig(rounds=3), entries, [0, 1, 2], tmp_path)
    progress = StudyProgress(runs, parallel=2)
    before = []  # runs already running when each started

    def start(planned):
        before.append(progress.running)
        _fake_run(calls)(planned.config, planned.resume)
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])

    run_parallel(runs, start, progress, poll=0.05)
    assert len(calls) == 6 and set(before) == {0, 1}  # two at once, never three
    dotted = tmp_path / "dbc+dbc-tau=1.5-s0"  # a label's dot is not a suffix
    assert fedcl.compare.run_log(dotted) == tmp_path / "dbc+dbc-tau=1.5-s0.log"
    out = capsys.readouterr().out
    assert "fedcl compare: run 2 of 6 (1 running)" in out
    assert out.count(" made\n") == 6
    started = []

    def failing(planned):
        slow = "import time; time.sleep(60)"
        code = "raise SystemExit(3)" if planned.config.seed == 1 else slow
        started.append(subprocess.Popen([sys.executable, "-c", code]))
        return started[-1]

    again = plan_runs(RunConfig(rounds=4), entries[:1], [0, 1, 2], tmp_path / "b")
    with pytest.raises(FedclError, match=r"fedavg-s1 failed \(exit code 3\).*fedavg-s1\.log"):
        run_parallel(again, failing, StudyProgress(again, parallel=2), poll=0.05)
    assert len(started) == 2 and started[0].returncode == -signal.SIGTERM  # stopped, not left


def test_a_run_sharing_the_cluster_builds_its_share_of_flowers_actor_pool(monkeypatch):
    from flwr.simulation.ray_transport import ray_actor

    from fedcl.cli.runs import share_cluster

    monkeypatch.setattr(ray_actor, "pool_size_from_resources", lambda resources: 5)
    share_cluster(2)  # two runs at once: each builds 2 of the 5 actors the cluster holds
    assert ray_actor.pool_size_from_resources({"num_cpus": 1}) == 2
    monkeypatch.setattr(ray_actor, "pool_size_from_resources", lambda resources: 5)
    share_cluster(8)  # more runs than actors: one each
    assert ray_actor.pool_size_from_resources({"num_cpus": 1}) == 1


def _scenarios(*texts):
    return [parse_entry(text, SCENARIOS) for text in texts]


def test_several_scenarios_get_a_table_each_and_an_overview(tmp_path, capsys):
    calls = []
    run_scenarios(
        RunConfig(rounds=3),
        _scenarios("iid", "client-drift"),
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
    # one column a scenario: its target figure, as run where hospitals drift
    assert "| strategy | iid: final_dice_own_stats | client-drift: final_dice |\n" in overview
    assert "| fedavg | n/a | 0.500 |\n" in overview  # the fake runs have no own_stats: n/a
    (tmp_path / "results.md").unlink()
    assert main(["report", str(tmp_path)]) == 0  # rebuilt from the runs alone
    assert (tmp_path / "results.md").read_text() == overview
    # a later command naming one scenario adds its directory, and the overview grows
    run_scenarios(
        RunConfig(rounds=3, rounds_per_stage=1),
        _scenarios("catastrophic-forgetting"),
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
    fedavg = [parse_entry("fedavg")]
    run_scenarios(RunConfig(rounds=3), _scenarios("iid"), fedavg, [0], tmp_path, _fake_run(calls))
    assert (tmp_path / "client-drift" / "results.md").exists()
    assert "## scenario client-drift" in (tmp_path / "results.md").read_text()


def test_a_scenario_entry_gets_a_directory_a_table_and_columns_of_its_own(tmp_path):
    calls = []
    scenarios = _scenarios("client-drift+drift-kind=annotation", "iid", "client-drift")
    entries = [parse_entry("fedavg"), parse_entry("dbc+dbc-steps=2")]
    run_scenarios(RunConfig(rounds=3), scenarios, entries, [0], tmp_path, _fake_run(calls))
    kinds = [(c.scenario, c.strategy, c.section(DriftSettings).drift_kind) for c, _ in calls]
    assert kinds == [
        ("client-drift", "fedavg", "annotation"),
        ("client-drift", "dbc", "annotation"),
        ("iid", "fedavg", "stain"),
        ("iid", "dbc", "stain"),
        ("client-drift", "fedavg", "stain"),
        ("client-drift", "dbc", "stain"),
    ]
    assert calls[1][0].section(DBCSettings).steps == 2  # both entries' settings
    variant = tmp_path / "client-drift+drift-kind=annotation"
    assert 'drift-kind = "annotation"' in (variant / "fedavg-s0" / "config.toml").read_text()
    title = (variant / "results.md").read_text().partition("\n")[0]
    assert title == "# fedcl compare: scenario client-drift+drift-kind=annotation"
    assert (variant / "results.csv").exists()
    overview = (tmp_path / "results.md").read_text()
    columns = overview.splitlines()[4]  # the headline table's header
    assert columns.index("| iid: final_dice_own_stats |") < columns.index(
        " client-drift: final_dice |"
    )
    assert columns.index(" client-drift: final_dice |") < columns.index(
        " client-drift+drift-kind=annotation: final_dice |"
    )  # the built-ins' order, a scenario's variants after it
    sections = [line for line in overview.splitlines() if line.startswith("## scenario")]
    assert sections == [
        "## scenario iid",
        "## scenario client-drift",
        "## scenario client-drift+drift-kind=annotation",
    ]
    # run again: every run is complete (its config is the one written), nothing reruns
    calls.clear()
    run_scenarios(RunConfig(rounds=3), scenarios, entries, [0], tmp_path, _fake_run(calls))
    assert calls == []
    (tmp_path / "results.md").unlink()
    assert main(["report", str(tmp_path)]) == 0  # rebuilt from the runs alone
    assert (tmp_path / "results.md").read_text() == overview


def test_a_scenario_entrys_bad_value_is_an_error_before_any_run(tmp_path):
    calls = []
    scenarios = _scenarios("client-drift", "client-drift+drift-kind=anotation")
    with pytest.raises(FedclError, match="entry 'client-drift.*Did you mean 'annotation'"):
        run_scenarios(RunConfig(), scenarios, [parse_entry("fedavg")], [0], tmp_path, calls.append)
    assert calls == [] and not list(tmp_path.iterdir())


@pytest.fixture
def fake_runs(monkeypatch):
    """``fedcl compare`` on the command line with :func:`_fake_run` runs, no Ray: the calls."""
    import contextlib

    import fedcl.cli.runs
    import fedcl.processes

    calls = []
    run = _fake_run(calls)
    monkeypatch.setattr(fedcl.cli.runs, "simulate_with_progress", lambda c, _, r, __: run(c, r))
    monkeypatch.setattr(fedcl.processes, "local_cluster", lambda: contextlib.nullcontext(""))
    return calls


def test_compare_runs_a_scenario_entry_from_the_command_line(tmp_path, fake_runs, capsys):
    calls = fake_runs
    scenarios = "client-drift,client-drift+drift-kind=annotation+drift-strength=0.5"
    command = ["compare", "--strategies", "fedavg", "--scenarios", scenarios, "--rounds", "2"]
    assert main([*command, "--drift-ratio", "0.6", "--out", str(tmp_path)]) == 0
    drift = [c.section(DriftSettings) for c, _ in calls]
    assert [(d.drift_kind, d.drift_strength) for d in drift] == [
        ("stain", 0.8),
        ("annotation", 0.5),
    ]
    assert [c.drift_ratio for c, _ in calls] == [0.6, 0.6]  # the command's own keys
    variant = "client-drift+drift-kind=annotation+drift-strength=0.5"
    assert (tmp_path / variant / "fedavg-s0" / "summary.json").exists()
    assert f"## scenario {variant}" in capsys.readouterr().out


def test_without_rounds_a_staged_scenario_entry_runs_its_stages_rounds(tmp_path, fake_runs):
    calls = fake_runs
    command = ["compare", "--strategies", "fedavg", "--scenarios", "iid,catastrophic-forgetting"]
    assert main([*command, "--rounds-per-stage", "2", "--out", str(tmp_path / "a")]) == 0
    assert [(c.scenario, c.rounds) for c, _ in calls] == [
        ("iid", 15),
        ("catastrophic-forgetting", 6),
    ]
    calls.clear()  # a row's own stage settings derive its rounds too
    rows = [
        "compare",
        "--strategies",
        "fedavg,fedavg+stages=4",
        "--scenarios",
        "catastrophic-forgetting",
    ]
    assert main([*rows, "--out", str(tmp_path / "c")]) == 0
    assert [c.rounds for c, _ in calls] == [15, 20]
    # chosen rounds stay the user's: a staged scenario they do not fit is an error
    given = [*command, "--rounds-per-stage", "2", "--rounds", "15", "--out", str(tmp_path / "b")]
    assert main(given) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategies", "dbc+dbc-stepz=3"], "Did you mean 'dbc-steps'?"),
        (["--strategies", "dbc+dbc-steps=many"], "dbc-steps must be int, got 'many'"),
        (["--strategies", "dbc+seed=3"], "set by fedcl compare"),
        (["--strategies", "fedavgg"], "Did you mean 'fedavg'?"),
        (["--strategies", "all", "--scenarios", "iid,drift"], "unknown scenario 'drift'"),
        (
            ["--strategies", "fedavg", "--scenarios", "client-drift+drift-kindd=annotation"],
            "Did you mean 'drift-kind'?",
        ),
        (
            ["--strategies", "fedavg", "--scenarios", "client-drift+dbc-tau=2"],
            "key 'dbc-tau' belongs to strategy dbc, not to scenario 'client-drift'",
        ),
        (
            ["--strategies", "fedavg", "--scenarios", "iid+drift-kind=blur"],
            (
                "key 'drift-kind' belongs to scenario client-drift or scenario "
                "drift-and-forgetting, not to scenario 'iid'"
            ),
        ),
        (  # a row varies the strategy; the data varies by scenario entry
            ["--strategies", "fedavg+drift-kind=blur", "--scenarios", "client-drift"],
            "not to strategy 'fedavg'",
        ),
        (["--strategies", "fedavg", "--scenarios", "iid+scenario=iid"], "set by fedcl compare"),
        (["--strategies", "fedavg,dbc", "--baseline", "lwf"], "'lwf' is not one of --strategies"),
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

    def fake_run_scenarios(base, scenarios, entries, seeds, out, run, **_):
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


# t_{0.975, n-1} from a printed table (not from scipy, which fedcl.study uses)
T_975 = {2: 4.302653, 4: 2.776445}


@pytest.mark.parametrize(
    ("differences", "mean", "std"),
    [
        ([1.0, 2.0, 3.0], 2.0, 1.0),  # the sample std of 1, 2, 3 is 1
        ([0.1, 0.3, 0.2, 0.0, 0.4], 0.2, 0.158114),  # sqrt(0.1 / 4)
        ([0.5, 0.5, 0.5], 0.5, 0.0),  # the same on every seed: a zero-width interval
        ([-3.0, 1.0, -1.0], -1.0, 2.0),
    ],
)
def test_a_paired_difference_has_a_student_t_interval(differences, mean, std):
    n = len(differences)
    baseline = {seed: 10.0 + seed for seed in range(n)}
    entry = {seed: baseline[seed] + d for seed, d in enumerate(differences)}
    result = paired(entry, baseline)
    half = T_975[n - 1] * std / n**0.5
    assert result.n == n and result.seeds == tuple(range(n))
    assert result.mean == pytest.approx(mean)
    assert result.low == pytest.approx(mean - half, abs=1e-5)
    assert result.high == pytest.approx(mean + half, abs=1e-5)


def test_a_paired_difference_uses_only_the_seeds_both_have_a_figure_on():
    entry = {10: 0.6, 11: None, 12: 0.9, 13: 0.8, 14: 0.7}
    baseline = {10: 0.5, 11: 0.5, 12: 0.7, 13: None}  # 14: never ran
    result = paired(entry, baseline)
    assert result.seeds == (10, 12) and result.n == 2
    assert result.mean == pytest.approx(0.15)
    half = 12.706205 * (0.1 / 2**0.5) / 2**0.5  # t_{0.975, 1} x std / sqrt(2)
    assert (result.low, result.high) == pytest.approx((0.15 - half, 0.15 + half), abs=1e-5)
    assert result.cell() == f"+0.150 [{0.15 - half:.3f}, {0.15 + half:.3f}] n=2"


def test_one_shared_seed_gives_a_difference_without_an_interval_and_none_gives_nothing():
    one = paired({10: 0.7, 11: None}, {10: 0.75, 12: 0.5})
    assert (one.mean, one.low, one.high, one.n, one.seeds) == (
        pytest.approx(-0.05),
        None,
        None,
        1,
        (10,),
    )
    assert one.cell() == "-0.050 n=1"
    none = paired({10: None}, {10: 0.5, 11: 0.5})
    assert (none.mean, none.low, none.high, none.n, none.seeds) == (None, None, None, 0, ())
    assert none.cell() == "n/a"
    with pytest.raises(ValueError, match="confidence must be in"):
        paired({0: 1.0}, {0: 0.0}, confidence=95)


def test_the_reporting_seeds_are_five_seeds_no_constant_was_chosen_on():
    assert TUNING_SEEDS == (0, 1, 2)
    assert len(REPORTING_SEEDS) == 5 and not set(REPORTING_SEEDS) & set(TUNING_SEEDS)
    (only_tuning,) = seed_note([2, 0, 1, 0])
    assert only_tuning.startswith("Seeds 0, 1, 2: tuning seeds only")
    assert only_tuning.endswith("(`--seeds 10,11,12,13,14`).")
    assert seed_note([11, 10]) == [
        "Seeds 10, 11: reporting seeds (no constant was chosen on them)."
    ]
    mixed = seed_note([0, 10, 2])
    assert mixed[0] == "Seeds 0, 2: tuning seeds; 10: reporting seeds."
    assert mixed[1].startswith("**Warning: this table mixes tuning seeds (0, 2) with reporting")


def _runs(out, dice):
    """Fake run directories: ``dice[label][seed]`` is the run's final Dice (iid)."""
    for label, seeds in dice.items():
        for seed, value in seeds.items():
            run_dir = out / f"{label}-s{seed}"
            run_dir.mkdir(parents=True)
            summary = {"final_dice": value, "scenario": "iid", "seed": seed, "rounds": 2}
            (run_dir / "summary.json").write_text(json.dumps(summary))
            (run_dir / "metrics.jsonl").write_text("")


def _csv(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_a_comparison_writes_every_runs_figures_and_paired_differences_against_fedavg(tmp_path):
    _runs(
        tmp_path,
        {
            "fedavg": {2: 0.4, 10: 0.5, 11: 0.6, 12: 0.7},
            "dbc": {2: 0.45, 10: 0.6, 11: 0.8, 12: 1.0, 13: 0.9},  # 13: fedavg has none
            "lwf": {10: 0.6},
        },
    )
    write_comparison(tmp_path)
    rows = _csv(tmp_path / "per-seed.csv")
    assert len(rows) == 10  # one a run, seeds in numeric order (not s10 before s2)
    assert [(r["strategy"], r["seed"]) for r in rows[:4]] == [
        ("dbc", "2"),
        ("dbc", "10"),
        ("dbc", "11"),
        ("dbc", "12"),
    ]
    fedavg = {r["seed"]: r for r in rows if r["strategy"] == "fedavg"}
    assert float(fedavg["11"]["final_dice"]) == 0.6 and fedavg["11"]["precision"] == ""
    # dbc - fedavg on seeds 2, 10, 11, 12: 0.05, 0.1, 0.2, 0.3
    mean, std = 0.1625, 0.110868  # by hand: sqrt(((-0.1125)^2 + ... + 0.1375^2) / 3)
    half = 3.182446 * std / 2  # t_{0.975, 3} x std / sqrt(4)
    text = (tmp_path / "results.md").read_text()
    assert "## Paired differences against fedavg" in text
    expected = f"+{mean:.3f} [{mean - half:.3f}, {mean + half:.3f}] n=4"
    assert f"| dbc | n/a | {expected} |" in text  # headline: own statistics, as run
    assert "| lwf | n/a | +0.100 n=1 |" in text
    paired_rows = {(r["strategy"], r["column"]): r for r in _csv(tmp_path / "paired.csv")}
    row = paired_rows["dbc", "final_dice"]
    assert (row["baseline"], row["n"], row["seeds"]) == ("fedavg", "4", "2 10 11 12")
    assert float(row["mean"]) == pytest.approx(mean)
    assert float(row["low"]) == pytest.approx(mean - half, abs=1e-5)
    assert float(row["high"]) == pytest.approx(mean + half, abs=1e-5)
    assert paired_rows["dbc", "final_dice_own_stats"]["n"] == "0"
    assert paired_rows["lwf", "final_dice"]["low"] == ""
    # seed 2 is a tuning seed among reporting seeds: said, and warned of
    assert "Seeds 2: tuning seeds; 10, 11, 12, 13: reporting seeds." in text
    assert "**Warning: this table mixes tuning seeds (2) with reporting seeds" in text


def test_the_baseline_alone_has_no_paired_differences(tmp_path):
    _runs(tmp_path, {"fedavg": {10: 0.5, 11: 0.6}})
    write_comparison(tmp_path)
    assert "Paired differences" not in (tmp_path / "results.md").read_text()
    assert not (tmp_path / "paired.csv").exists()
    assert len(_csv(tmp_path / "per-seed.csv")) == 2


def test_the_baseline_of_the_paired_differences_can_be_named(tmp_path, capsys):
    _runs(tmp_path, {"dbc": {10: 0.6, 11: 0.8}, "lwf": {10: 0.5, 11: 0.6}})
    write_comparison(tmp_path)  # no fedavg: no paired differences
    assert "Paired differences" not in (tmp_path / "results.md").read_text()
    assert not (tmp_path / "paired.csv").exists()
    assert main(["report", str(tmp_path), "--baseline", "lwf"]) == 0
    text = (tmp_path / "results.md").read_text()
    assert "## Paired differences against lwf" in text
    assert "| dbc | n/a | +0.150 [-0.485, 0.785] n=2 |" in text  # 0.15 +- 12.706 x 0.05
    assert "| lwf |" not in text.split("## Paired differences")[1]
    assert (tmp_path / "paired.csv").exists()
    assert main(["report", str(tmp_path)]) == 0  # the baseline is the command's, not kept
    assert not (tmp_path / "paired.csv").exists()
    assert main(["report", str(tmp_path), "--baseline", "fedavg"]) == 2
    assert "baseline 'fedavg' is not an entry of this comparison; its entries: dbc, lwf" in (
        capsys.readouterr().err
    )


def test_a_comparison_plot_of_many_long_named_entries_grows_downward_not_sideways(tmp_path):
    figures = ("final_dice_own_stats", "final_dice", "acc_own_stats", "acc")
    row = {figure: (0.5, 0.1) for figure in figures} | {
        "forgetting_own_stats": (None, None),
        "forgetting": (None, None),
    }
    curve = [(1, 0.4, 0.1), (2, 0.5, 0.1)]
    few = {"fedavg": row, "dbc": row | {"acc": (None, None)}}  # a figure it lacks: no bar
    many = {f"dbc+dbc-filter=false+dbc-teacher-term=kl+dbc-loss-jump=0.{i}": row for i in range(20)}
    sizes = {}
    for name, table in (("few", few), ("many", many)):
        plot_comparison({entry: curve for entry in table}, table, tmp_path / f"{name}.png")
        sizes[name] = matplotlib.image.imread(tmp_path / f"{name}.png").shape[:2]
    (few_high, few_wide), (many_high, many_wide) = sizes["few"], sizes["many"]
    assert many_wide <= 1.2 * few_wide, "long names must not widen the figure"
    assert many_high > 2 * few_high, "each entry takes a row of its own"
    for name in many:
        assert wrapped_label(name).replace("\n", "") == name
        assert max(len(line) for line in wrapped_label(name).splitlines()) <= 32
    assert wrapped_label("dbc+" + "x" * 40) == "dbc\n+" + "x" * 40  # one option, one line


@pytest.mark.parametrize("entries", [2, 10, 22, 60])
def test_every_entry_of_a_comparison_plot_has_a_colour_of_its_own(entries):
    colors = entry_colors([f"entry{i}" for i in range(entries)])
    assert len(set(colors.values())) == entries
