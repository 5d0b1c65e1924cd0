"""Test-wide settings: offline and quiet Flower, no albumentations update check."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

import pytest  # noqa: E402
from processes import processes_with_env  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address():
    """A real local Ray head node on 127.0.0.1, started once for the whole session.

    End-to-end runs attach to it with ``--ray-address`` (as on a user's cluster), so
    the session pays Ray's start-up once instead of once per run; it is stopped at the
    end of the session. Only this cluster: its processes carry a tag in their
    environment (``ray stop`` would stop every Ray on the machine, a user's experiments
    included).
    """
    ray = shutil.which("ray")
    if ray is None:
        pytest.skip("ray CLI not on PATH")
    port, tag = _free_port(), uuid.uuid4().hex
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
        env=os.environ | {"FEDCL_TEST_RAY_CLUSTER": tag},
    )
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _stop(f"FEDCL_TEST_RAY_CLUSTER={tag}")


def _stop(tag: str, grace: float = 10.0) -> None:
    """SIGTERM the processes tagged ``tag``, SIGKILL those left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in processes_with_env(tag):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and processes_with_env(tag):
            time.sleep(0.2)
