"""Shared fixtures: offline, quiet Flower/Ray settings for every test."""

from __future__ import annotations

import os

import pytest

from fedcl.config import RunConfig

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")


@pytest.fixture
def tiny_config(tmp_path) -> RunConfig:
    """Three hospitals, two rounds, 16-px... well, 32-px tiles: seconds, not minutes."""
    return RunConfig(
        clients=3,
        rounds=2,
        image_size=32,
        train_tiles=12,
        test_tiles=6,
        batch_size=6,
        out=str(tmp_path / "run"),
    )
