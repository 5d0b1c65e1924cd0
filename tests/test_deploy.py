"""Deployment: the compose files, and the same topology as real local processes."""

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import tomllib
import zipfile
from dataclasses import replace
from pathlib import Path

import flwr
import pytest
import tomli_w
import torch
import yaml
from audit_checks import assert_messages_carry_no_data
from flwr.cli.build import build_fab_from_disk

from fedcl.configure import flower_run_config, from_toml, load_config
from fedcl.deploy.certs import write_node_keys
from fedcl.deploy.local import LocalDeployment, follow_run
from fedcl.deploy.topology import Network, compose_file, render_compose, services
from fedcl.processes import free_port, processes_with_env

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--rounds", "2", "--image-size", "32", "--train-tiles", "8", "--test-tiles", "4",
    "--batch-size", "4", "--reference-size", "8",
]  # fmt: skip
TINY_KEYS = {"image-size": 32, "train-tiles": 8, "test-tiles": 4, "batch-size": 4}


@pytest.mark.parametrize(
    ("path", "tls"), [("docker-compose.yml", False), ("docker-compose.tls.yml", True)]
)
def test_committed_compose_files_are_generated_from_the_topology(path, tls):
    # One source of truth: regenerate with `fedcl deploy compose [--tls] > FILE`.
    assert (ROOT / path).read_text() == render_compose(3, tls=tls)


@pytest.mark.parametrize("tls", [False, True])
def test_compose_topology(tls):
    compose = yaml.safe_load(render_compose(3, tls=tls))["services"]
    assert set(compose) == {"superlink", "serverapp"} | {
        f"{kind}-{h}" for kind in ("supernode", "clientapp") for h in range(3)
    }
    version = flwr.__version__
    assert compose["superlink"]["image"] == f"flwr/superlink:{version}"
    for h in range(3):
        node, app = compose[f"supernode-{h}"], compose[f"clientapp-{h}"]
        assert node["image"] == f"flwr/supernode:{version}"
        assert f"partition-id={h} num-partitions=3" in node["command"]
        assert "healthcheck" in node and node["depends_on"]["superlink"]
        assert app["build"]["dockerfile"] == "docker/app/Dockerfile"
        # A hospital's ClientApp sees its own data, read-only, and no other hospital's.
        data = [v for v in app["volumes"] if "/data" in v]
        assert data == [f"./data/hospital-{h}:/data:ro"]
        assert app["command"][:2] == ["--runtime-api-address", f"supernode-{h}:9094"]
        # its ClientApps forked from a warm interpreter, as in deploy local
        assert app["entrypoint"] == ["python", "-m", "fedcl.deploy.warm", "flower-superexec"]
    assert compose["serverapp"]["build"]["dockerfile"] == "docker/app/Dockerfile"
    assert all("entrypoint" not in compose[name] for name in ("serverapp", "superlink"))
    fresh = compose_file(3, tls=tls, warm=False)["services"]
    assert not any("entrypoint" in service for service in fresh.values())
    assert {k: v for k, v in compose["clientapp-0"].items() if k != "entrypoint"} == fresh[
        "clientapp-0"
    ]
    for name, service in compose.items():
        command = service["command"]
        assert ("--insecure" in command) != tls, name
        if tls:
            assert "./certificates:/certificates:ro" in service["volumes"]
            if "--ssl-certfile" in command or name.startswith(("superlink", "supernode")):
                assert command[command.index("--ssl-certfile") + 1] == "/certificates/server.pem"
            if name.startswith(("serverapp", "clientapp", "supernode")):
                assert "--root-certificates" in command


def test_dockerfiles_build_on_the_pinned_flower_images():
    text = (ROOT / "docker" / "app" / "Dockerfile").read_text()
    assert f"ARG FLWR_VERSION={flwr.__version__}" in text
    assert "FROM flwr/superexec:${FLWR_VERSION}" in text


def _flags(command):
    # Flag names and the values that do not depend on where a service runs.
    placeless = re.compile(r"^(--\S+|process|partition-id=.*)$")
    return [token for token in command if placeless.match(token)]


@pytest.mark.parametrize("tls", [False, True])
def test_local_deployment_runs_the_compose_commands(tmp_path, tls):
    local = LocalDeployment(3, tmp_path, tls=tls).services
    compose = compose_file(3, tls=tls)["services"]
    assert [s.name for s in local] == list(compose)
    for service in local:
        expected = compose[service.name]["command"]
        assert _flags(service.args) == _flags(expected), service.name
        assert all(a.startswith("127.0.0.1") for a in service.args if re.match(r"\S+:\d+$", a))
        assert "0.0.0.0" not in service.args  # local services listen on loopback only
    if tls:
        for name in ("ca.pem", "server.pem", "server.key"):
            assert (tmp_path / "certificates" / name).stat().st_size > 0
        assert (tmp_path / "certificates" / "server.key").stat().st_mode & 0o077 == 0


def test_services_are_listed_in_start_order():
    names = [s.name for s in services(2, _loopback())]
    for service in services(2, _loopback()):
        for needed in service.after:
            assert names.index(needed) < names.index(service.name)


def test_warm_clientapps_run_flowers_entry_point_forked_from_a_loaded_interpreter(tmp_path):
    # A stand-in for a hospital's SuperExec: it runs flwr-clientapp as SuperExec does
    # (by name, from PATH) and reports what it got.
    script = textwrap.dedent(
        """
        import json, os, shutil, subprocess, sys
        def run(*args, **env):
            done = subprocess.run(["flwr-clientapp", *args], capture_output=True, text=True,
                                  env=os.environ | env)
            return [done.returncode, done.stdout, done.stderr]
        found = shutil.which("flwr-clientapp")
        folder = os.path.dirname(os.environ["FEDCL_WARM_SOCKET"])
        report = {"found": found, "folder": folder, "mode": os.stat(folder).st_mode & 0o777,
                  "help": run("--help"), "bad": run("--bogus"),
                  "fallback": run("--help", FEDCL_WARM_SOCKET=folder + "/gone")}
        print(json.dumps(report))
        """
    )
    done = subprocess.run(
        [sys.executable, "-m", "fedcl.deploy.warm", sys.executable, "-c", script],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["found"] == report["folder"] + "/flwr-clientapp"  # first on PATH
    assert report["mode"] == 0o700  # the socket's folder: this user only
    code, out, _ = report["help"]
    assert code == 0 and out.startswith("usage: flwr-clientapp")  # Flower's own parser
    code, _, err = report["bad"]
    assert code == 2 and "--token --token-file is required" in err  # exit code and stderr
    assert report["fallback"][:2] == report["help"][:2]  # no fork server: the real program
    deadline = time.monotonic() + 10
    while Path(report["folder"]).exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(report["folder"]).exists()  # the fork server left with its SuperExec


def _loopback():
    from fedcl.deploy.topology import Network

    return Network(bind="127.0.0.1", host=lambda _n: "127.0.0.1", port=lambda _n: 1)


def _processes_from(directory: Path) -> list[int]:
    # Every process a deployment starts (and their children) has its FLWR_HOME inside
    # the run directory.
    return processes_with_env(str(directory))


def _deploy(out: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fedcl", "deploy", "local", "--out", str(out), *args],
        cwd=ROOT,
        env=(env or os.environ) | {"PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=400,
    )


# Two rounds through the CLI, logs and audit checked (~3 minutes each): slow-marked to
# keep the default suite under 15 minutes on 2 cores; a TLS deployment runs DBC with the
# audit in the default suite (test_only_registered_hospitals_join_a_tls_deployment), and
# the compose flags are checked quickly (test_local_deployment_runs_the_compose_commands).
@pytest.mark.slow
@pytest.mark.parametrize("tls", [pytest.param(False, id="insecure"), pytest.param(True, id="tls")])
def test_deploy_local_runs_dbc_to_completion(tmp_path, tls):
    out, audit = tmp_path / "run", tmp_path / "audit"
    audit.mkdir()
    result = _deploy(
        out,
        "--hospitals",
        "2",
        "--strategy",
        "dbc",
        *TINY,
        *(["--tls"] if tls else []),
        env=os.environ | {"FEDCL_AUDIT_DIR": str(audit)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategy"] == "dbc" and summary["rounds"] == 2
    assert 0 <= summary["final_dice"] <= 1
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2]
    assert all(len(r["aggregation"]["decisions"]) == 2 for r in records[1:])
    logs = out / "deployment" / "logs"
    assert {p.stem for p in logs.glob("*.log")} == {
        "superlink", "serverapp", "supernode-0", "supernode-1", "clientapp-0", "clientapp-1",
    }  # fmt: skip
    # TLS on means no daemon ran with --insecure (Flower warns about it in the log).
    insecure = [p.name for p in logs.glob("*.log") if "--insecure" in p.read_text()]
    assert (insecure == []) == tls
    assert _processes_from(out) == []
    # every message a hospital received or sent: the model and numbers, no data
    config = from_toml(out / "config.toml")
    assert_messages_carry_no_data(audit, config, trained=2 * 2)


@pytest.mark.slow  # ~90 s; stopping every process is checked by the termination test
def test_deploy_local_reports_a_serverapp_failure_and_stops_everything(tmp_path):
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "exploding_strategy.py").write_text(
        textwrap.dedent(
            """
            from flwr.serverapp.strategy import FedAvg

            class Exploding(FedAvg):
                def aggregate_train(self, server_round, replies):
                    raise RuntimeError("exploding strategy: boom in round " + str(server_round))
            """
        )
    )
    out = tmp_path / "run"
    env = os.environ | {"PYTHONPATH": str(plugin)}
    result = _deploy(
        out, "--hospitals", "2", "--strategy", "exploding_strategy:Exploding", *TINY, env=env
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "finished:failed" in result.stderr
    assert "boom in round 1" in result.stderr  # the ServerApp's own error, shown
    fedcl_side = result.stderr.split("The ServerApp's log")[0]
    assert "Traceback" not in fedcl_side  # fedcl's own message has no traceback
    assert _processes_from(out) == []


def test_deploy_local_stops_every_process_when_terminated(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "fedcl", "deploy", "local", "--out", str(out)]
    process = subprocess.Popen(
        [*command, "--hospitals", "2", *TINY, "--rounds", "20"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        assert _processes_from(out)  # the deployment is running
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert _processes_from(out) == []


@pytest.mark.slow
def test_deploy_local_runs_a_plugin_strategy_with_a_hospital_half_by_entry_point(tmp_path):
    # an installed package registers it; the SuperNodes' ClientApps run its hospital half
    dist = tmp_path / "site" / "fedcl_pull-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fedcl-pull\nVersion: 0.1\n")
    entry = "[fedcl.strategies]\npull = plugin_strategy:PullToRound\n"
    (dist / "entry_points.txt").write_text(entry)
    path = os.pathsep.join([str(dist.parent), str(ROOT / "tests")])
    out = tmp_path / "run"
    result = _deploy(
        out, "--hospitals", "2", "--strategy", "pull", "--pull-weight", "5", *TINY,
        env=os.environ | {"PYTHONPATH": path},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records] == [0, 1, 2]
    for record in records[1:]:
        distances = record["aggregation"]["pull_distance"]
        assert len(distances) == 2 and all(d > 0 for d in distances)
    # the run's own keys are in its config.toml (this process does not know "pull")
    assert tomllib.loads((out / "config.toml").read_text())["pull-weight"] == 5.0
    assert _processes_from(out) == []


def test_only_registered_hospitals_join_a_tls_deployment(tmp_path, monkeypatch):
    out, workdir = tmp_path / "run", tmp_path / "run" / "deployment"
    audit = tmp_path / "audit"
    audit.mkdir()
    monkeypatch.setenv("FEDCL_AUDIT_DIR", str(audit))  # the deployment's processes inherit it
    deployment = LocalDeployment(2, workdir, tls=True)
    link = next(s for s in deployment.services if s.name == "superlink")
    assert "--enable-supernode-auth" in link.args
    # an intruder: it trusts the CA and reaches the SuperLink, but its key was never
    # registered (it even claims hospital 0's partition)
    keys = write_node_keys(tmp_path / "intruder", 1)
    port = free_port()
    network = Network(
        bind="127.0.0.1",
        host=lambda _name: "127.0.0.1",
        port=lambda name: port if name == "supernode-0" else deployment.network.port(name),
    )
    tls = replace(deployment.tls, node_keys=str(keys[0].parent))
    intruder = next(s for s in services(2, network, tls) if s.name == "supernode-0")
    config = load_config(
        {"strategy": "dbc", "clients": 2, "rounds": 1, "out": str(out)} | TINY_KEYS
    )
    config_file = workdir / "run-config.toml"
    with deployment:
        with (tmp_path / "intruder.log").open("wb") as log:
            process = subprocess.Popen(
                intruder.command, stdout=log, stderr=subprocess.STDOUT, env=deployment.env,
                cwd=tmp_path, start_new_session=True,
            )  # fmt: skip
        try:
            assert process.wait(timeout=120) != 0  # refused: the SuperNode gives up
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        refusal = (tmp_path / "intruder.log").read_text()
        assert "Failed to activate SuperNode" in refusal, refusal
        # the SuperLink logs the refused key
        link_log = deployment.log("superlink").read_text()
        assert "No SuperNode found with the given public key" in link_log
        assert _pem_body(keys[0]) in link_log.replace("\\n", "")
        # the registered hospitals joined, and the run goes on without the intruder
        config_file.write_text(tomli_w.dumps(flower_run_config(config)))
        run = follow_run(
            deployment.connection, config_file, out, config.rounds,
            check_alive=deployment.check_alive,
        )  # fmt: skip
    assert run["status"] == "finished:completed"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(records[-1]["dice_per_hospital"]) == 2
    assert len(records[-1]["aggregation"]["decisions"]) == 2
    assert _processes_from(tmp_path) == []
    # TLS everywhere: no daemon ran with --insecure (Flower warns about it in the log)
    assert not [p.name for p in (workdir / "logs").glob("*.log") if "--insecure" in p.read_text()]
    # every message a hospital received or sent: the model and numbers, no data
    assert_messages_carry_no_data(audit, config, trained=2)


def _pem_body(public_key: Path) -> str:
    """The base64 body of an OpenSSH public key file as PEM (how Flower logs a key)."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_ssh_public_key(public_key.read_bytes())
    pem = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()
    return "".join(pem.splitlines()[1:-1])


def test_deploy_certs_writes_each_hospitals_key_pair_and_register_needs_them(tmp_path, capsys):
    from fedcl.cli import main

    keys = tmp_path / "keys"
    assert main(["deploy", "register", str(keys), "--hospitals", "2"]) == 2
    assert "fedcl deploy certs" in capsys.readouterr().err  # says how to make them
    assert main(["deploy", "certs", str(keys), "--hospitals", "2"]) == 0
    assert "fedcl deploy register" in capsys.readouterr().out
    for h in range(2):
        private, public = keys / f"supernode-{h}", keys / f"supernode-{h}.pub"
        assert private.stat().st_mode & 0o077 == 0  # the hospital's secret
        assert public.read_text().startswith("ecdsa-sha2-nistp384 ")  # what Flower reads
    assert (keys / "supernode-0.pub").read_text() != (keys / "supernode-1.pub").read_text()


def _serverapp_pids(directory: Path) -> list[int]:
    # the ServerApp process a deployment's SuperExec started for the run
    pids = []
    for pid in _processes_from(directory):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"flwr-serverapp" in command:
            pids.append(pid)
    return pids


@pytest.mark.slow  # two deployments and a simulation (~5 minutes on 2 cores)
def test_a_killed_deployed_run_resumes_to_the_figures_of_an_uninterrupted_one(tmp_path):
    from fedcl.metrics import without_timing
    from fedcl.recorder import read_checkpoint, read_metrics

    deployed, simulated = tmp_path / "deployed", tmp_path / "simulated"
    flags = ["--hospitals", "2", "--strategy", "dbc", *TINY[2:], "--rounds", "3"]
    first = subprocess.Popen(
        [sys.executable, "-m", "fedcl", "deploy", "local", "--out", str(deployed), *flags],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    killed = False
    while not killed and time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            done = int(read_checkpoint(deployed)["round"])
        except Exception:  # not written yet, or being written
            continue
        if 1 <= done < 3:
            for pid in _serverapp_pids(deployed):
                os.kill(pid, signal.SIGKILL)
                killed = True
    output = first.communicate(timeout=300)[0]
    assert killed and first.returncode == 1, output  # the run failed, and said so
    assert not (deployed / "summary.json").exists()
    resumed = subprocess.run(
        [sys.executable, "-m", "fedcl", "deploy", "local", "--resume", str(deployed)],
        cwd=ROOT, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (deployed / "deployment" / "resumed-1" / "logs" / "superlink.log").exists()
    assert _processes_from(tmp_path) == []
    # the same figures and model as an uninterrupted run (deployed and simulated runs of
    # one config agree: docs/deployment.md)
    sim_flags = [f if f != "--hospitals" else "--clients" for f in flags]
    assert subprocess.run(
        [sys.executable, "-m", "fedcl", "run", "--out", str(simulated), *sim_flags],
        cwd=ROOT, capture_output=True, timeout=400,
    ).returncode == 0  # fmt: skip
    records = [
        [{k: v for k, v in r.items() if k != "aggregation"} for r in read_metrics(d)]
        for d in (deployed, simulated)
    ]
    assert without_timing(records[0]) == without_timing(records[1])
    summaries = [json.loads((d / "summary.json").read_text()) for d in (deployed, simulated)]
    for key in ("final_dice", "final_dice_own_stats", "rounds"):
        assert summaries[0][key] == summaries[1][key], key
    models = [read_checkpoint(d)["model"] for d in (deployed, simulated)]
    assert all(torch.equal(models[0][k], models[1][k]) for k in models[1])


def test_the_app_bundle_holds_the_apps_and_not_the_docs_or_tests():
    # every message to a hospital carries it, and its ClientApp unpacks it
    bundle = build_fab_from_disk(ROOT)
    names = zipfile.ZipFile(io.BytesIO(bundle)).namelist()
    assert {"clients/app.py", "server/app.py", "fedcl/hospital.py", "pyproject.toml"} <= set(names)
    assert not [n for n in names if n.split("/")[0] in {"docs", "tests", "benchmarks"}]
    assert len(bundle) < 1_000_000
