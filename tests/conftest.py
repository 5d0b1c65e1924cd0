"""Test-wide settings: offline and quiet Flower, no albumentations update check."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address():
    """A real local Ray head node on 127.0.0.1, started once for the whole session.

    End-to-end runs attach to it with ``--ray-address`` (as on a user's cluster), so
    the session pays Ray's start-up once instead of once per run; it is stopped at the
    end of the session.
    """
    ray = shutil.which("ray")
    if ray is None:
        pytest.skip("ray CLI not on PATH")
    port = _free_port()
    subprocess.run(
        [
            ray,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)
