"""The compose deployment in real containers (scripts/compose_check.py).

The end-to-end test builds images and runs two deployments: minutes. It is marked
``docker`` and ``slow`` (out of the default run): ``pytest -m docker`` selects it, and
it is skipped where no Docker engine runs and none can be started (dockerd, as root).
The host-network compose file it runs is checked here quickly against the committed one.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fedcl.deploy.topology import compose_file

ROOT = Path(__file__).resolve().parents[1]


def _placeless(command):
    # Flags and the values that do not depend on addresses (cf. test_deploy._flags).
    keep = re.compile(r"^(--\S+|process|partition-id=.*|/certificates/.*)$")
    return [token for token in command if keep.match(token)]


@pytest.mark.parametrize("tls", [False, True])
def test_host_network_variant_runs_the_committed_topology_on_loopback(tls):
    bridge = compose_file(3, tls=tls)["services"]
    host = compose_file(3, tls=tls, network="host")["services"]
    assert list(host) == list(bridge)
    ports = []
    for name, service in host.items():
        assert service["network_mode"] == "host" and "ports" not in service, name
        command = service["command"]
        assert _placeless(command) == _placeless(bridge[name]["command"]), name
        assert "0.0.0.0" not in command  # nothing listens beyond loopback
        addresses = [a for a in command if re.match(r"\S+:\d+$", a)]
        assert all(a.startswith("127.0.0.1:") for a in addresses), name
        if "--port" in command:
            ports.append(command[command.index("--port") + 1])
        # same images, volumes, environment and start order as the committed file
        for key in ("image", "build", "volumes", "environment", "depends_on"):
            assert service.get(key) == bridge[name].get(key), (name, key)
    assert sorted(ports) == ["8000", "9094", "9095", "9096"]  # one port per daemon


def test_app_images_are_built_never_pulled():
    for name, service in compose_file(3)["services"].items():
        if "build" in service:
            assert service["pull_policy"] == "build", name
            role = "serverapp" if name == "serverapp" else "clientapp"
            assert service["image"].startswith(f"fedcl-{role}:")


def test_dockerignore_keeps_the_build_context_to_the_sources():
    allowed = [
        line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines() if line[:1] == "!"
    ]
    assert sorted(allowed) == ["README.md", "clients", "fedcl", "pyproject.toml", "server"]
    dockerfile = ROOT / "docker" / "app" / "Dockerfile"
    copied = re.findall(r"^COPY --chown=app:app (.+) \S+$", dockerfile.read_text(), re.M)
    assert {path for line in copied for path in line.split()} <= set(allowed)


def _engine_available() -> bool:
    # Root: the check gives runs/ and the certificates to the images' user (UID 49999),
    # and starts dockerd where no engine runs.
    docker = shutil.which("docker")
    if not docker or os.geteuid() != 0:
        return False
    running = subprocess.run([docker, "info"], capture_output=True).returncode == 0
    return running or bool(shutil.which("dockerd"))


@pytest.mark.docker
@pytest.mark.slow
def test_compose_deployment_runs_in_containers(tmp_path):
    if not _engine_available():  # looked at only when selected (-m docker)
        pytest.skip("no Docker engine, and none can be started (needs root)")
    report_file = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "compose_check.py"), "--report", str(report_file)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-5000:]
    report = json.loads(report_file.read_text())
    for variant in ("insecure", "tls"):
        assert len(report[variant]["round_seconds"]) == 3  # round 0 (evaluation) + 2 rounds
        assert 0 <= report[variant]["final_dice"] <= 1
