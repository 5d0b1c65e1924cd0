"""Test-wide settings: offline and quiet Flower, no albumentations update check.

Every process the suite starts inherits ``FEDCL_TEST_SESSION``: the session fails if
one of them is still running at its end (a Ray daemon, a SuperLink a test forgot).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ["FEDCL_TEST_SESSION"] = uuid.uuid4().hex
SESSION_MARK = f"FEDCL_TEST_SESSION={os.environ['FEDCL_TEST_SESSION']}"


import pytest  # noqa: E402
from flwr.supercore.task_identity import TaskIdentity  # noqa: E402

from fedcl.processes import TAG, local_cluster, processes_with_env, stop_tagged  # noqa: E402


@pytest.fixture(scope="session")
def ray_address():
    """A real local Ray head node on 127.0.0.1, started once for the whole session.

    End-to-end runs attach to it with ``--ray-address`` (as on a user's cluster), so
    the session pays Ray's start-up once instead of once per run; it is stopped at the
    end of the session, and only it (not another Ray on the machine).
    """
    with local_cluster(num_cpus=2) as address:
        yield address


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run where PyTorch sees a CUDA device and are skipped elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def pytest_sessionfinish(session, exitstatus):
    """Fail the session if a process it started outlived it (then stop that process)."""
    deadline = time.monotonic() + 15  # stopping daemons take a moment to exit
    while (left := processes_with_env(SESSION_MARK)) and time.monotonic() < deadline:
        time.sleep(0.5)
    if not left:
        return
    commands = []
    for pid in left:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cluster = [e.decode() for e in environ if e.startswith(TAG.encode())]
        except OSError:
            command, cluster = b"(gone)", []
        commands.append(f"{pid}: {command.decode(errors='replace')[:120]} {cluster}")
    stop_tagged(SESSION_MARK, grace=5.0)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line("processes the test session left running (now stopped):", red=True)
        for line in commands:
            reporter.write_line(f"  {line}", red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def flower_task():
    """Messages can only be built inside a Flower task: pretend to be one."""
    names = ("_task_id", "_run_id", "_node_id")
    saved = [getattr(TaskIdentity, n) for n in names]
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    yield
    for name, value in zip(names, saved, strict=True):
        setattr(TaskIdentity, name, value)


# Flower's own aggregators: no hospital half, so their hospitals run FedAvg's round
FLOWER_OWN = ("fedmedian", "fedtrimmedavg", "krum", "multikrum", "bulyan")


class FakeGrid:
    def __init__(self, n):
        self.n = n

    def get_node_ids(self):
        return list(range(1, self.n + 1))


def random_tiles(count: int = 8, size: int = 32, seed: int = 0):
    """Noise tiles with random masks: a TileDataset for tests that need any images."""
    import numpy as np

    from fedcl.data import NUM_CLASSES, TileDataset

    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (count, size, size, 3), dtype=np.uint8)
    masks = rng.integers(0, NUM_CLASSES, (count, size, size), dtype=np.uint8)
    return TileDataset(images, masks, NUM_CLASSES)
