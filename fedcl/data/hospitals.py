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

_TILES, _STAIN, _REFERENCE, _ROOT = 1, 2, 4, 5  # seed domains (3: batch order)
# The server's tiles come from "a broad mix of stains": every tile its own protocol,
# shifted from the reference stain up to a strong scanner/protocol change.
BROAD_STAIN_MIX = 0.5
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


def _broad_mix_tiles(config: RunConfig, count: int, domain: int) -> TileDataset:
    images = np.empty((count, config.image_size, config.image_size, 3), np.uint8)
    masks = np.empty((count, config.image_size, config.image_size), np.uint8)
    for i in range(count):
        seed = np.random.SeedSequence(config.seed, spawn_key=(domain, i))
        stain = perturb(Stain(), np.random.default_rng(seed), BROAD_STAIN_MIX)
        tile, mask = generate_tiles(
            1,
            size=config.image_size,
            stain=stain,
            seed=np.random.SeedSequence(config.seed, spawn_key=(domain, i, 1)),
        )
        images[i], masks[i] = tile[0], mask[0]
    return TileDataset(images, masks, NUM_CLASSES)


def reference_images(config: RunConfig) -> np.ndarray:
    """Return the server's public reference set: ``reference-size`` unlabeled tiles.

    Drawn from a broad stain mix (each tile its own stain), from a seed stream disjoint
    from every hospital's data. Returns ``M x H x W x 3`` uint8.
    """
    return _broad_mix_tiles(config, config.reference_size, _REFERENCE).images


def root_dataset(config: RunConfig) -> TileDataset:
    """Return the labelled server-side root set of FLTrust (``root-tiles``, broad stain mix)."""
    return _broad_mix_tiles(config, config.root_tiles, _ROOT)
