"""Each simulated hospital's data, derived from the run's seed.

Seed streams are separated by a domain tag so no two data sets share tiles:
``SeedSequence(seed, spawn_key=(domain, hospital, split))``.
"""

from __future__ import annotations

import numpy as np

from fedcl.config import RunConfig
from fedcl.data.dataset import TileDataset
from fedcl.data.stain import Stain, perturb
from fedcl.data.synthetic import NUM_CLASSES, generate_tiles

_TILES, _STAIN = 1, 2  # seed domains
SPLITS = ("train", "test")


def site_stain(seed: int, hospital: int, strength: float) -> Stain:
    """Return the hospital's own staining protocol (the reference stain, perturbed)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(_STAIN, hospital)))
    return perturb(Stain(), rng, strength)


def hospital_dataset(config: RunConfig, hospital: int, split: str) -> TileDataset:
    """Tiles of ``hospital`` (0-based) for ``split`` ("train" or "test").

    The test split is held out (a disjoint seed stream) and rendered with the same
    site stain as the training split.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= hospital < config.clients:
        raise ValueError(f"hospital must be in 0..{config.clients - 1}, got {hospital}")
    count = config.train_tiles if split == "train" else config.test_tiles
    images, masks = generate_tiles(
        count,
        size=config.image_size,
        stain=site_stain(config.seed, hospital, config.site_stain),
        seed=np.random.SeedSequence(config.seed, spawn_key=(_TILES, hospital, SPLITS.index(split))),
    )
    return TileDataset(images, masks, NUM_CLASSES)
