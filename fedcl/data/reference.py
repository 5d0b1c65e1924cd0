"""The server's own tiles: the public reference set (DBC) and the root set (FLTrust).

By default (``server-data = "synthetic"``) both are generated from "a broad mix of
stains" (every tile its own protocol) on seed streams disjoint from every hospital's
data; when the stages of a run change the tissue architecture, the server's tiles take
every architecture of the run in turn (a public atlas favours no stage). With
``server-data = "KIND:PATH"`` they are real tiles read from that folder (the real-data
layouts of :mod:`fedcl.data.real`, every site in it), in a seeded order: the
reference set from the start, the root set from after it. ``unlabeled:PATH`` (any
images, no masks) serves the reference set only: FLTrust's root set needs labels.
"""

from __future__ import annotations

import numpy as np

from fedcl import seeds
from fedcl.config import RunConfig
from fedcl.data.dataset import TileDataset
from fedcl.data.real import IGNORE, hospital_tiles, index_slides, label_table, parse_data
from fedcl.data.stain import Stain, perturb
from fedcl.data.synthetic import NUM_CLASSES, generate_tiles
from fedcl.errors import FedclError
from fedcl.scenarios import scenario_of
from fedcl.scenarios.tiles import stage_tissue

# Each server tile's stain is the reference stain shifted by this much: from mild to a
# strong scanner/protocol change (see stain.perturb).
BROAD_STAIN_MIX = 0.5


def _broad_mix_tiles(config: RunConfig, count: int, domain: int) -> TileDataset:
    tissues = [stage_tissue(config, stage) for stage in range(scenario_of(config).num_stages())]
    images = np.empty((count, config.image_size, config.image_size, 3), np.uint8)
    masks = np.empty((count, config.image_size, config.image_size), np.uint8)
    for i in range(count):
        stain = perturb(Stain(), seeds.rng(config.seed, domain, i), BROAD_STAIN_MIX)
        tile, mask = generate_tiles(
            1,
            size=config.image_size,
            stain=stain,
            seed=seeds.stream(config.seed, domain, i, 1),
            tissue=tissues[i % len(tissues)],
        )
        images[i], masks[i] = tile[0], mask[0]
    return TileDataset(images, masks, NUM_CLASSES)


def _real_tiles(config: RunConfig, start: int, count: int) -> TileDataset:
    """Tiles ``start .. start + count`` of ``server-data``, in a seeded order."""
    spec = parse_data(config.server_data)
    table = label_table(spec.kind, config.label_map)
    slides = index_slides(spec, by_site=False)
    stream = seeds.stream(config.seed, seeds.REFERENCE)
    images, masks = hospital_tiles(slides, table, config.image_size, stream)
    if len(images) < start + count:
        raise FedclError(
            f"config key 'server-data': {config.server_data!r} has {len(images)} usable "
            f"{config.image_size}-px tiles; the server needs {start + count} "
            f"(reference-size {config.reference_size} + root-tiles {config.root_tiles})"
        )
    masks = masks[start : start + count]
    if spec.kind == "unlabeled":
        masks = np.full_like(masks, IGNORE)  # no pixel of an unlabeled tile is a class
    return TileDataset(images[start : start + count], masks, NUM_CLASSES)


def reference_images(config: RunConfig) -> np.ndarray:
    """Return the server's public reference set: ``reference-size`` unlabeled tiles.

    ``M x H x W x 3`` uint8; generated, each tile its own stain, or read from
    ``server-data``.
    """
    if config.server_data != "synthetic":
        return _real_tiles(config, 0, config.reference_size).images
    return _broad_mix_tiles(config, config.reference_size, seeds.REFERENCE).images


def root_dataset(config: RunConfig) -> TileDataset:
    """Return FLTrust's labelled server-side root set (``root-tiles``).

    Generated with a broad stain mix, or read from ``server-data`` (after the tiles
    of the reference set).
    """
    if config.server_data != "synthetic":
        return _real_tiles(config, config.reference_size, config.root_tiles)
    return _broad_mix_tiles(config, config.root_tiles, seeds.ROOT)
