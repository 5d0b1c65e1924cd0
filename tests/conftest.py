"""Test-wide settings: offline and quiet Flower, no albumentations update check."""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


import pytest  # noqa: E402

from fedcl.processes import local_cluster  # noqa: E402


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
