"""End to end through Flower's real Ray simulation engine (and `flwr run .`)."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import tomli_w
import torch
from audit_checks import assert_messages_carry_no_data
from PIL import Image

from fedcl.cli import main
from fedcl.config import RunConfig
from fedcl.configure import from_toml
from fedcl.data import NUM_CLASSES
from fedcl.metrics import without_timing
from fedcl.models import build_model
from fedcl.plugins import STRATEGIES
from fedcl.processes import _alive, _stat, local_cluster, processes_with_env, stop_tagged
from fedcl.recorder import read_metrics
from fedcl.simulation import warm_hospitals
from fedcl.strategies.dbc import DBCSettings

ROOT = Path(__file__).resolve().parents[1]


def run_fedcl(config: RunConfig, tmp_path: Path, name: str, ray_address: str = "") -> Path:
    config_file = tmp_path / f"{name}.toml"
    out = tmp_path / name
    with config_file.open("wb") as handle:
        tomli_w.dump(config.replace(out=str(out), ray_address=ray_address).to_mapping(), handle)
    assert main(["run", "--config", str(config_file)]) == 0
    return out


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same tiny config run twice (3 hospitals, 2 rounds, 32-px tiles)."""
    tmp_path = tmp_path_factory.mktemp("sim")
    config = RunConfig(
        clients=3, rounds=2, image_size=32, train_tiles=12, test_tiles=6, batch_size=6
    )
    return config, run_fedcl(config, tmp_path, "a"), run_fedcl(config, tmp_path, "b")


def test_run_directory_is_complete_and_valid(two_runs):
    config, run, _ = two_runs
    assert from_toml(run / "config.toml") == config.replace(out=str(run))
    records = read_metrics(run)
    assert [r["round"] for r in records] == [0, 1, 2]
    for record in records:
        assert 0 <= record["dice"] <= 1
        assert len(record["dice_per_hospital"]) == 3
        assert record["dice"] == pytest.approx(sum(record["dice_per_hospital"]) / 3)
        assert record["wall_seconds"] > 0
    assert records[0]["train_loss"] is None  # round 0 is the initial model
    assert all(r["train_loss"] > 0 for r in records[1:])
    summary = json.loads((run / "summary.json").read_text())
    # read over the last two rounds (fedcl.metrics.READ_ROUNDS)
    assert summary["final_dice"] == pytest.approx((records[-2]["dice"] + records[-1]["dice"]) / 2)
    assert summary["rounds"] == 2 and summary["strategy"] == "fedavg"
    assert summary["scenario"] == "iid" and summary["seed"] == 0
    assert summary["wall_seconds"] > 0
    assert Image.open(run / "dice.png").size[0] > 300
    provenance = json.loads((run / "provenance.json").read_text())
    assert provenance["data"] == "synthetic" and len(provenance["hospitals"]) == 3
    assert provenance["software"]["torch"] == torch.__version__  # what ran it
    # TensorBoard: the same figures, round by round, for `tensorboard --logdir runs/`
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("dice/mean")]
    assert logged == [(r["round"], pytest.approx(r["dice"])) for r in records]
    assert "dice per hospital/hospital 2" in events.Tags()["scalars"]
    assert (run / "hparams").is_dir()  # the configuration as hyper-parameters
    model = build_model("unet", NUM_CLASSES)
    checkpoint = torch.load(run / "checkpoint.pt")
    assert checkpoint["round"] == 2 and checkpoint["strategy"] == {}
    model.load_state_dict(checkpoint["model"])


def test_training_changes_the_global_model(two_runs):
    _, run, _ = two_runs
    records = read_metrics(run)
    assert records[2]["dice"] != records[0]["dice"]


def test_same_seed_gives_bit_identical_runs(two_runs):
    _, run_a, run_b = two_runs
    assert without_timing(read_metrics(run_a)) == without_timing(read_metrics(run_b))
    weights_a = torch.load(run_a / "checkpoint.pt")["model"]
    weights_b = torch.load(run_b / "checkpoint.pt")["model"]
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


@pytest.mark.parametrize(
    "scenario",
    [pytest.param("iid", marks=pytest.mark.slow), "client-drift"],  # drift: the harder case
)
def test_hospital_and_server_evaluation_give_the_same_figures(tmp_path, scenario, ray_address):
    config = RunConfig(
        scenario=scenario, clients=3, rounds=2, image_size=32, train_tiles=12, test_tiles=6,
        batch_size=6, drift_ratio=0.34,
    )  # fmt: skip
    runs = {
        mode: run_fedcl(config.replace(evaluation=mode), tmp_path, mode, ray_address)
        for mode in ("hospitals", "server")
    }
    hospitals, server = (without_timing(read_metrics(runs[m])) for m in ("hospitals", "server"))
    assert [r["round"] for r in hospitals] == [r["round"] for r in server] == [0, 1, 2]
    for a, b in zip(hospitals, server, strict=True):
        assert a.keys() == b.keys()
        for key in a.keys():
            expected = b[key] if b[key] is None else pytest.approx(b[key], rel=1e-6)
            assert a[key] == expected, (a["round"], key)
    assert hospitals[0]["dice_own_stats"] is not None  # BatchNorm: a re-estimated figure too
    summaries = [json.loads((runs[m] / "summary.json").read_text()) for m in runs]
    assert summaries[0]["acc_own_stats"] == pytest.approx(summaries[1]["acc_own_stats"])


TINY = RunConfig(
    clients=3,
    rounds=2,
    image_size=32,
    train_tiles=12,
    test_tiles=6,
    batch_size=6,
    reference_size=4,
    root_tiles=6,
    # consolidate in round 2 whatever the shift detector says
    sections=(DBCSettings(warmup=1, consolidation="always", pixels_per_image=64),),
)


# Two strategies run end to end by default (DBC: a server and a hospital half that send
# each other more than weights; LwF: a hospital half with a kept teacher); every
# strategy's halves are checked in-process (test_strategies.py), each through Ray here
# with -m slow.
RUN_BY_DEFAULT = ("dbc", "lwf")


@pytest.mark.parametrize(
    "name",
    [
        name if name in RUN_BY_DEFAULT else pytest.param(name, marks=pytest.mark.slow)
        for name in sorted(STRATEGIES.builtin)
    ],
)
def test_every_builtin_strategy_runs_two_rounds(tmp_path, name, ray_address):
    run = run_fedcl(TINY.replace(strategy=name), tmp_path, name, ray_address)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["strategy"] == name and summary["rounds"] == 2
    assert 0 <= summary["final_dice"] <= 1
    records = read_metrics(run)
    if name == "fedavg":  # the hospitals' handler, phase by phase
        timing = records[2]["hospital_seconds"]
        assert set(timing) == {"receive", "evaluation", "training", "delivery", "start", "reply"}
        assert 0 < summary["hospital_seconds"]["evaluation_share"] < 1
        # simulated hospitals are Ray workers that live across messages: nothing starts
        assert timing["start"] == 0 and 0 <= timing["delivery"] < 5 and timing["reply"] >= 0
    if name == "dbc":
        report = records[2]["aggregation"]
        assert report["hospitals"] == [0, 1, 2]
        assert len(report["peer_scores"]) == 3 and len(report["decisions"]) == 3
        # after the 1-round warm-up
        assert report["consolidation"]["steps"] == DBCSettings().steps
        assert (run / "dbc.png").exists()
        assert torch.load(run / "checkpoint.pt")["strategy"]["anchor"] is not None
    if name == "fltrust":
        assert len(records[1]["aggregation"]["trust"]) == 3


@pytest.mark.slow  # two runs (~55 s); the hospital's and strategy's parts are unit-tested
def test_lwf_is_fedavg_in_the_first_stage_and_distils_in_the_next(tmp_path, ray_address):
    staged = TINY.replace(scenario="catastrophic-forgetting", stages=2, rounds_per_stage=1)
    runs = {
        name: read_metrics(run_fedcl(staged.replace(strategy=name), tmp_path, name, ray_address))
        for name in ("fedavg", "lwf")
    }
    fedavg, lwf = runs["fedavg"], runs["lwf"]
    # the model after round 1 (scored in round 2's replies) is FedAvg's bit for bit
    assert lwf[1]["dice_per_hospital"] == fedavg[1]["dice_per_hospital"]
    assert lwf[2]["dice_per_hospital"] != fedavg[2]["dice_per_hospital"]  # stage 2 distils


@pytest.mark.slow  # two staged runs (~2 min); the read rounds are unit-tested
def test_scoring_only_the_read_rounds_leaves_every_summary_figure_as_it_was(tmp_path, ray_address):
    staged = TINY.replace(
        scenario="catastrophic-forgetting", stages=3, rounds_per_stage=3, rounds=9
    ).replace(strategy="lwf")
    every = run_fedcl(staged, tmp_path, "every", ray_address)
    read = run_fedcl(staged.replace(evaluate_rounds="read"), tmp_path, "read", ray_address)
    summaries = [json.loads((d / "summary.json").read_text()) for d in (every, read)]
    assert without_timing(summaries[1]) == without_timing(summaries[0])
    records = read_metrics(read)
    assert [r["round"] for r in records if r["dice"] is None] == [0, 1, 4]  # not read
    same = read_metrics(every)
    assert all(records[r]["dice_per_stage_own_stats"] == same[r]["dice_per_stage_own_stats"]
               for r in (2, 3, 5, 6, 7, 8, 9))  # fmt: skip


def test_a_users_strategy_and_model_run_through_dotted_paths(tmp_path, ray_address):
    # the hospitals (Ray workers) build the plug-in model too, not only the server
    config = TINY.replace(strategy="plugin_strategy:HalfStep", model="plugin_model:tiny")
    run = run_fedcl(config, tmp_path, "plugin", ray_address)
    records = read_metrics(run)
    assert records[1]["aggregation"] == {"half": True}
    assert json.loads((run / "summary.json").read_text())["strategy"] == (
        "plugin_strategy:HalfStep"
    )
    final = torch.load(run / "checkpoint.pt", weights_only=False)["model"]
    assert final.keys() == build_model("plugin_model:tiny", NUM_CLASSES).state_dict().keys()
    assert records[-1]["dice"] > 0  # the hospitals trained and scored the plug-in network


# slow-marked to keep the default suite near 15 minutes on 2 cores: the built-ins' hospital
# halves run end to end in test_every_builtin_strategy_runs_two_rounds, this plug-in's in
# test_strategies (unit) and test_deploy (fedcl deploy local, by entry point)
@pytest.mark.slow
def test_a_users_strategy_with_a_hospital_half_and_own_keys_runs(tmp_path, ray_address):
    # the hospitals (Ray workers) run the plug-in's hospital half with the key it declares
    from plugin_strategy import PullSettings

    config = TINY.replace(
        strategy="plugin_strategy:PullToRound", sections=(PullSettings(round=1, weight=5.0),)
    )
    run = run_fedcl(config, tmp_path, "pull", ray_address)
    records = read_metrics(run)
    assert from_toml(run / "config.toml").to_mapping()["pull-weight"] == 5.0
    for record in records[1:]:
        report = record["aggregation"]
        assert report["hospitals"] == [0, 1, 2] and len(report["pull_distance"]) == 3
        assert all(0 < d < math.inf for d in report["pull_distance"])  # the hospitals pulled


def test_a_users_scenario_runs_end_to_end_by_dotted_path(tmp_path, ray_address):
    # the hospitals (Ray workers) build the plug-in scenario's tiles, the server its truth
    config = TINY.replace(clients=4, strategy="dbc", scenario="plugin_scenario:BlurredOddHospitals")
    run = run_fedcl(config, tmp_path, "scenario", ray_address)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["scenario"] == "plugin_scenario:BlurredOddHospitals" and summary["rounds"] == 2
    assert summary["detection"]["recall"] is not None  # the plug-in's drifted hospitals: truth
    assert all(0 <= d <= 1 for d in read_metrics(run)[-1]["dice_per_hospital"])


@pytest.mark.slow  # installs a package (~80 s); the dotted path runs by default
def test_a_users_scenario_runs_end_to_end_by_entry_point(tmp_path):
    # An installed package registers it: a distribution on the path with the entry point.
    dist = tmp_path / "site" / "fedcl_demo-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fedcl-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[fedcl.scenarios]\nblurred = plugin_scenario:BlurredOddHospitals\n"
    )
    tests = Path(__file__).resolve().parent
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(dist.parent), str(tests)])}
    out = tmp_path / "run"
    flags = ["--clients", "4", "--rounds", "2", "--image-size", "32", "--train-tiles", "12"]
    flags += ["--test-tiles", "6", "--batch-size", "6", "--out", str(out)]
    command = [sys.executable, "-m", "fedcl", "run", "--scenario", "blurred", *flags]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["scenario"] == "blurred" and summary["rounds"] == 2


@pytest.mark.slow  # ~45 s; every Ray run of the suite attaches to the session's cluster
def test_a_run_attaches_to_an_existing_ray_cluster_and_leaves_it_running(tmp_path, ray_address):
    run = run_fedcl(TINY, tmp_path, "cluster", ray_address)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == 2 and 0 <= summary["final_dice"] <= 1
    assert from_toml(run / "config.toml").ray_address == ray_address
    status = subprocess.run(
        ["ray", "status", f"--address={ray_address}"], capture_output=True, text=True, timeout=60
    )
    assert status.returncode == 0, status.stderr  # the cluster outlives the run


def test_runs_in_a_warm_block_share_their_hospitals_and_give_the_same_figures(
    tmp_path, ray_address
):
    import ray

    fresh = run_fedcl(TINY, tmp_path, "fresh", ray_address)
    with warm_hospitals() as warm:
        run_fedcl(TINY.replace(strategy="lwf"), tmp_path, "first", ray_address)
        started = warm.started
        second = run_fedcl(TINY, tmp_path, "second", ray_address)
    assert started > 0 and warm.started == started and warm.reused == started
    assert [without_timing(r) for r in read_metrics(second)] == [
        without_timing(r) for r in read_metrics(fresh)
    ]
    assert not ray.is_initialized()  # the block's end disconnected what its runs connected


@pytest.mark.slow  # starts a second cluster (~60 s)
def test_a_local_cluster_stops_itself_and_nothing_else(ray_address):
    def alive(address: str) -> bool:
        status = ["ray", "status", f"--address={address}"]
        return subprocess.run(status, capture_output=True, timeout=60).returncode == 0

    with local_cluster(num_cpus=1) as other:
        assert other != ray_address and alive(other)
    assert not alive(other)
    assert alive(ray_address)  # the session's cluster (a user's, say) still runs


def test_stop_tagged_stops_descendants_whose_environment_hides_the_mark(tmp_path):
    # Ray's agents rename themselves (setproctitle), which can blank their environment
    # as /proc shows it: they are found as the children of a tagged process instead
    mark = f"FEDCL_TEST_MARK_{uuid.uuid4().hex}"
    script = (
        "import subprocess, time; subprocess.Popen(['env', '-i', 'sleep', '300']); time.sleep(300)"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], env=os.environ | {mark: "1"})
    try:
        deadline = time.monotonic() + 30
        while not (hidden := _children_of(parent.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hidden and processes_with_env(mark) == [parent.pid]  # the child hides it
        stop_tagged(mark, grace=5.0)
        parent.wait(timeout=10)
        assert not [pid for pid in hidden if _alive(pid)]
    finally:
        parent.kill()


def _children_of(pid: int) -> list[int]:
    procs = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [c for c in procs if (fields := _stat(c)) is not None and int(fields[1]) == pid]


@pytest.mark.parametrize("mark", ["", "PATH", "="])
def test_a_mark_found_in_every_environment_is_refused(mark):
    # "" is in every process's environment: stop_tagged("") would stop the machine
    with pytest.raises(ValueError, match="unique"):
        stop_tagged(mark)
    with pytest.raises(ValueError, match="unique"):
        processes_with_env(mark)


@pytest.mark.slow  # a run with its own Ray beside the session's (~100 s)
def test_without_an_address_a_run_starts_its_own_ray_beside_a_running_cluster(
    tmp_path, ray_address
):
    # ray.init() with no address would join the cluster `ray start` left running and
    # hang; fedcl asks for a local instance. A subprocess, so a regression fails here.
    config = RunConfig(clients=2, rounds=1, image_size=32, train_tiles=6, test_tiles=4)
    out = tmp_path / "local"
    flags = [f"--{key}={value}" for key, value in config.to_mapping().items()]
    result = subprocess.run(
        [sys.executable, "-m", "fedcl", "run", *flags, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["rounds"] == 1
    # the hospitals' actors stopping at the end is no warning for the user
    assert "Manually terminating" not in result.stderr
    # fedcl's own Ray start (preloaded workers, their thread count) changes no result:
    # the same run through the session's cluster, where Flower's actors start afresh.
    shared = run_fedcl(config, tmp_path, "shared", ray_address)
    assert _dice_by_round(out) == _dice_by_round(shared)


def _dice_by_round(run_dir: Path) -> list[list[float]]:
    return [record["dice_per_hospital"] for record in read_metrics(run_dir)]


@pytest.mark.parametrize(("client_cpus", "expected"), [(1.0, (True, 1)), (2.0, (False, 2))])
def test_local_ray_workers_load_the_hospitals_before_their_first_message(client_cpus, expected):
    # 1 CPU per hospital: one prestarted worker per actor, preloaded; 2: not preloaded
    # (one of the two prestarted workers would import for nothing). Either way the
    # actor's torch runs on the actor's CPUs.
    import ray

    from fedcl.simulation import local_ray

    @ray.remote(num_cpus=client_cpus)
    class Probe:
        def state(self) -> tuple[bool, int]:
            return "clients.app" in sys.modules, torch.get_num_threads()

    with local_ray(RunConfig(client_cpus=client_cpus)):
        actors = int(ray.cluster_resources()["CPU"] // client_cpus)
        probes = [Probe.remote() for _ in range(actors)]
        states = ray.get([probe.state.remote() for probe in probes])
    assert not ray.is_initialized()
    assert states == [expected] * actors


def test_device_cuda_without_cuda_is_a_clear_error(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["run", "--device", "cuda", "--rounds", "1"]) == 2
    assert "has no CUDA device" in capsys.readouterr().err


def test_device_auto_falls_back_to_cpu():
    from fedcl.training import resolve_device

    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.skipif(shutil.which("flwr") is None, reason="flwr CLI not on PATH")
@pytest.mark.slow  # Flower's own launcher (~85 s); fedcl run is the suite's path
def test_flwr_run_dot_runs_the_same_app_beside_a_running_ray_cluster(tmp_path, ray_address):
    # The session's cluster (`ray start --head`) is running: Flower's own simulation
    # calls ray.init() without an address, which joined it and hung; the ClientApp
    # module makes it start its own Ray, as the README's command expects.
    assert ray_address
    flwr_home = tmp_path / "flwr-home"
    out = tmp_path / "flwr-run"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {
        "FLWR_HOME": str(flwr_home),
        "FLWR_TELEMETRY_ENABLED": "0",
        "FLWR_DISABLE_UPDATE_CHECK": "1",
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    }
    run_config = (
        f'clients=2 rounds=1 image-size=32 train-tiles=8 test-tiles=4 batch-size=4 out="{out}"'
    )
    try:
        result = subprocess.run(
            [
                "flwr",
                "run",
                ".",
                "--stream",
                "--run-config",
                run_config,
                "--federation-config",
                "num-supernodes=2 client-resources-num-cpus=1",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        # `flwr run --stream` can exit 0 although the ServerApp failed: check its output.
        assert result.returncode == 0, result.stdout + result.stderr
        deadline = time.time() + 30
        while not (out / "summary.json").exists() and time.time() < deadline:
            time.sleep(0.5)
        summary = json.loads((out / "summary.json").read_text())
        assert summary["rounds"] == 1 and 0 <= summary["final_dice"] <= 1
    finally:
        # `flwr run` against :local: leaves a detached SuperLink (and its Ray): stop
        # everything that carries this test's FLWR_HOME in its environment.
        stop_tagged(str(flwr_home))


def test_a_failing_hospital_costs_only_its_update_and_messages_carry_no_data(tmp_path, monkeypatch):
    from fedcl.simulation import simulate

    messages = tmp_path / "messages"
    messages.mkdir()
    # Ray's workers import the test ClientApp: they inherit this environment.
    paths = [str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("FEDCL_TEST_FAIL", "1:2")
    monkeypatch.setenv("FEDCL_AUDIT_DIR", str(messages))
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    import faulty_clients

    config = TINY.replace(clients=3, rounds=3, out=str(tmp_path / "run"))
    simulate(config, client_app=faulty_clients.app)

    records = read_metrics(tmp_path / "run")
    assert [r["round"] for r in records] == [0, 1, 2, 3]
    dropped = records[2]["aggregation"]["dropped"]
    assert len(dropped) == 1 and "hospital 1 failed in round 2" in dropped[0]["reason"]
    assert all("dropped" not in (r.get("aggregation") or {}) for r in (records[1], records[3]))

    # Privacy: every message a hospital received or sent holds the model's arrays (or
    # none), and numbers: no tile, mask or per-tile output.
    assert_messages_carry_no_data(messages, config, trained=3 * 3 - 1)


@pytest.mark.slow  # waits out a timeout (~110 s); a failing hospital runs by default
def test_a_hospital_that_times_out_costs_only_its_update(tmp_path, monkeypatch):
    from fedcl.simulation import simulate

    paths = [str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("FEDCL_TEST_SLOW", "2:2:70")  # hospital 2 answers round 2 late
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    import faulty_clients

    # 40 s: round 1 starts the Ray actors (torch imports), which took over 15 s on a
    # busy 2-core machine, so that round must fit in the timeout with room to spare
    config = TINY.replace(clients=3, rounds=2, round_timeout=40.0, out=str(tmp_path / "run"))
    simulate(config, client_app=faulty_clients.app)
    records = read_metrics(tmp_path / "run")
    assert [r["round"] for r in records] == [0, 1, 2]
    assert records[2]["train_loss"] is not None  # round 2 aggregated the two in time
    assert records[2]["aggregation"] == {"missing": [2]}
    assert "aggregation" not in records[1]
    # its score of the model after round 1 came with its late reply: that record says so
    assert records[1]["not_evaluated"] == [2] and records[1]["dice_per_hospital"][2] is None
    assert "not_evaluated" not in records[0]


RESUMED = {
    # DBC with a short warm-up and a hair-trigger detector (it names the hospitals' teacher
    # in rounds 6 and 7 of this run), killed in round 8: its anchor, history and teacher
    # must survive the kill, and the hospitals get the teacher again.
    "dbc": (
        TINY.replace(
            scenario="catastrophic-forgetting", stages=3, rounds_per_stage=3, rounds=9
        ).replace(
            strategy="dbc",
            sections=(DBCSettings(warmup=1, rho=0.0, calm_rounds=2),),
            reference_size=8,
        ),
        8,
    ),
    # LwF killed in the middle of its second stage (rounds 5-8): the hospitals' teacher
    # is gone with the processes and must come back from the checkpoint.
    "lwf": (
        TINY.replace(
            scenario="catastrophic-forgetting", stages=2, rounds_per_stage=4, rounds=8
        ).replace(strategy="lwf"),
        6,
    ),
    # EWC killed in its third stage: the hospitals' importance and anchor are gone with
    # the processes and come back from the checkpoint (or, killed in the stage's first
    # round, the importance of the stages before, and the hospitals estimate anew).
    "ewc": (
        TINY.replace(
            scenario="catastrophic-forgetting", stages=3, rounds_per_stage=2, rounds=6
        ).replace(strategy="ewc"),
        5,
    ),
}


@pytest.mark.parametrize(
    "strategy",
    # ~3 minutes each; tools/same_figures.py also kills and resumes a run
    [pytest.param(s, marks=pytest.mark.slow) for s in ("dbc", "lwf", "ewc")],
)
def test_a_run_killed_mid_round_resumes_to_the_same_final_model(tmp_path, strategy):
    config, recorded = RESUMED[strategy]
    killed = tmp_path / "killed"
    config_file = tmp_path / "killed.toml"
    config_file.write_bytes(tomli_w.dumps(config.replace(out=str(killed)).to_mapping()).encode())
    tag = f"fedcl-kill-test-{tmp_path.name}"
    process = subprocess.Popen(
        [sys.executable, "-m", "fedcl", "run", "--config", str(config_file)],
        cwd=ROOT,
        env=os.environ | {"FEDCL_TEST_TAG": tag},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 300
        # rounds 0 .. recorded - 1 recorded (a round's record is complete with the next
        # one's replies)
        while len(_lines(killed / "metrics.jsonl")) < recorded:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(0.5)  # into round 3
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # the whole run: driver and Ray
        process.wait()
        stop_tagged(tag, grace=0.0)  # what it started outside its group: Ray daemons
    done = torch.load(killed / "checkpoint.pt", weights_only=False)["round"]
    assert recorded - 1 <= done < config.rounds

    assert main(["run", "--resume", str(killed)]) == 0
    whole = run_fedcl(config, tmp_path, "whole")

    resumed_model = torch.load(killed / "checkpoint.pt", weights_only=False)["model"]
    whole_model = torch.load(whole / "checkpoint.pt", weights_only=False)["model"]
    assert resumed_model.keys() == whole_model.keys()
    for key in whole_model:
        assert torch.equal(resumed_model[key], whole_model[key]), key

    reports = {r["round"]: r.get("aggregation", {}) for r in read_metrics(killed)}
    if strategy == "dbc":  # a teacher was in use when the run was killed, and sent again
        assert reports[done].get("teacher_round", 0) > 0
    if strategy in ("dbc", "ewc"):  # what the hospitals held came again after the resume
        assert reports[done + 1]["extra_bytes"] > 0

    # resends after a resume add bytes a whole run does not send
    records = [without_timing(read_metrics(d), also={"extra_bytes"}) for d in (killed, whole)]
    assert records[0] == records[1]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (killed, whole)]
    for key in ("final_dice", "dice_matrix", "acc", "detection", "rounds"):
        assert summaries[0][key] == summaries[1][key], key


def test_resume_needs_a_run_directory_and_no_other_options(tmp_path, capsys):
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "no config.toml" in capsys.readouterr().err
    (tmp_path / "config.toml").write_text("")
    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "checkpoint.pt" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path), "--rounds", "3"]) == 2
    assert "drop --rounds" in capsys.readouterr().err


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.parametrize(
    ("given", "expected"), [(None, "local"), ("10.0.0.1:6379", "10.0.0.1:6379")]
)
def test_the_clientapp_keeps_flowers_own_ray_local_unless_an_address_is_given(given, expected):
    # `flwr run .`'s simulation runtime imports the ClientApp before its ray.init().
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if given:
        env["RAY_ADDRESS"] = given
    script = "import os, clients.app; print(os.environ['RAY_ADDRESS'])"
    shown = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert shown.stdout.strip() == expected, shown.stderr[-2000:]
