"""The server's own tiles: the public reference set (DBC) and the root set (FLTrust).

By default (``server-data = "synthetic"``) both are generated from "a broad mix of
stains" (every tile its own protocol) on seed streams disjoint from every hospital's
data. When the stages of a run change the tissue architecture (or the annotated
classes), the server's tiles take the architectures of the stages ``public-stages``
allows in turn (a public atlas favours no stage): by default the stages begun so far,
so the server's set changes at a stage boundary and never holds a stage to come
(:func:`public_stages`). With
``server-data = "KIND:PATH"`` they are real tiles read from that folder (the real-data
layouts of :mod:`fedcl.data.real`, every site in it), in a seeded order: the
reference set from the start, the root set from after it. ``unlabeled:PATH`` (any
images, no masks) serves the reference set only: FLTrust's root set needs labels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from fedcl import seeds
from fedcl.config import RunConfig
from fedcl.data.dataset import TileDataset
from fedcl.data.real import IGNORE, hospital_tiles, index_slides, label_table, parse_data
from fedcl.data.stain import Stain, perturb
from fedcl.data.synthetic import NUM_CLASSES, generate_tiles
from fedcl.errors import FedclError
from fedcl.scenarios import scenario_of
from fedcl.scenarios.tiles import annotate, shifts, stage_classes, stage_tissue

T = TypeVar("T")

# Each server tile's stain is the reference stain shifted by this much: from mild to a
# strong scanner/protocol change (see stain.perturb).
BROAD_STAIN_MIX = 0.5


def public_stages(config: RunConfig, server_round: int) -> range:
    """Return the stages whose tissue the server's generated tiles hold in ``server_round``.

    ``public-stages``: ``current`` (every stage begun by ``server_round``), ``first``
    or ``all`` (every stage of the run, from round 1).
    """
    scenario = scenario_of(config)
    if config.public_stages == "all":
        return range(scenario.num_stages())
    if config.public_stages == "first":
        return range(1)
    return range(scenario.stage_of(server_round) + 1)


def public_set(
    config: RunConfig, build: Callable[[int], T]
) -> Callable[[int], tuple[tuple[int, ...], T]]:
    """Wrap ``build(server_round)`` (a server's tiles) to rebuild only when they change.

    The returned function gives ``(stages, tiles)`` for a round: the public stages the
    tiles hold (:func:`public_stages`) and ``build``'s result, kept while those stay.
    """
    kept: dict[tuple[int, ...], T] = {}

    def of_round(server_round: int) -> tuple[tuple[int, ...], T]:
        stages = tuple(public_stages(config, server_round))
        if stages not in kept:
            kept.clear()
            kept[stages] = build(server_round)
        return stages, kept[stages]

    return of_round


def _broad_mix_tiles(config: RunConfig, count: int, domain: int, server_round: int) -> TileDataset:
    stages = public_stages(config, server_round)
    tissues = [stage_tissue(config, stage) for stage in stages]
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
    if shifts(config, "classes"):  # labelled as a stage's annotators do: known classes only
        known = tuple(c for stage in stages for c in stage_classes(config, stage))
        masks = annotate(masks, known, "train")
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
            f"(in order: reference-size {config.reference_size}, root-tiles "
            f"{config.root_tiles}, and reference-size again where public tiles are kept "
            "apart from the reference set)"
        )
    masks = masks[start : start + count]
    if spec.kind == "unlabeled":
        masks = np.full_like(masks, IGNORE)  # no pixel of an unlabeled tile is a class
    return TileDataset(images[start : start + count], masks, NUM_CLASSES)


def reference_images(config: RunConfig, server_round: int) -> np.ndarray:
    """Return the server's public reference set in ``server_round``: ``reference-size`` tiles.

    ``M x H x W x 3`` uint8, unlabeled; generated, each tile its own stain, holding the
    tissue of :func:`public_stages`; or read from ``server-data`` (the same every round).
    """
    if config.server_data != "synthetic":
        return _real_tiles(config, 0, config.reference_size).images
    return _broad_mix_tiles(config, config.reference_size, seeds.REFERENCE, server_round).images


def apart_images(config: RunConfig, server_round: int) -> np.ndarray:
    """Return ``reference-size`` public tiles apart from the reference set in ``server_round``.

    Drawn as the reference set is (the same stages' tissue, a broad stain mix) but none
    of its tiles: what hospitals may train on without the server's scores on the
    reference set measuring their own training. With ``server-data``, the tiles after
    the reference and root sets.
    """
    if config.server_data != "synthetic":
        start = config.reference_size + config.root_tiles
        return _real_tiles(config, start, config.reference_size).images
    return _broad_mix_tiles(config, config.reference_size, seeds.PUBLIC_APART, server_round).images


def root_dataset(config: RunConfig, server_round: int) -> TileDataset:
    """Return FLTrust's labelled server-side root set (``root-tiles``) in ``server_round``.

    Generated with a broad stain mix and the tissue (and annotated classes) of
    :func:`public_stages`, or read from ``server-data`` (after the tiles of the
    reference set; the same every round).
    """
    if config.server_data != "synthetic":
        return _real_tiles(config, config.reference_size, config.root_tiles)
    return _broad_mix_tiles(config, config.root_tiles, seeds.ROOT, server_round)
