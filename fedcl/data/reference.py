"""The server's own tiles: the public reference set (DBC) and the root set (FLTrust).

Both come from "a broad mix of stains" (every tile its own protocol) on seed streams
disjoint from every hospital's data.
"""

from __future__ import annotations

import numpy as np

from fedcl import seeds
from fedcl.config import RunConfig
from fedcl.data.dataset import TileDataset
from fedcl.data.stain import Stain, perturb
from fedcl.data.synthetic import NUM_CLASSES, generate_tiles

# Each server tile's stain is the reference stain shifted by this much: from mild to a
# strong scanner/protocol change (see stain.perturb).
BROAD_STAIN_MIX = 0.5


def _broad_mix_tiles(config: RunConfig, count: int, domain: int) -> TileDataset:
    images = np.empty((count, config.image_size, config.image_size, 3), np.uint8)
    masks = np.empty((count, config.image_size, config.image_size), np.uint8)
    for i in range(count):
        stain = perturb(Stain(), seeds.rng(config.seed, domain, i), BROAD_STAIN_MIX)
        tile, mask = generate_tiles(
            1, size=config.image_size, stain=stain, seed=seeds.stream(config.seed, domain, i, 1)
        )
        images[i], masks[i] = tile[0], mask[0]
    return TileDataset(images, masks, NUM_CLASSES)


def reference_images(config: RunConfig) -> np.ndarray:
    """Return the server's public reference set: ``reference-size`` unlabeled tiles.

    ``M x H x W x 3`` uint8, each tile its own stain.
    """
    return _broad_mix_tiles(config, config.reference_size, seeds.REFERENCE).images


def root_dataset(config: RunConfig) -> TileDataset:
    """Return the labelled server-side root set of FLTrust (``root-tiles``, broad stain mix)."""
    return _broad_mix_tiles(config, config.root_tiles, seeds.ROOT)
