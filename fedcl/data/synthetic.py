"""Procedural H&E tiles with pixel-exact masks (the built-in synthetic histology).

A tile is a random partition into tissue regions (noise-warped Voronoi cells), each
region one of the BCSS 5-class groups with its own morphology:

- 0 background/other: near-white glass with faint debris;
- 1 tumor: crowded, large, irregular, hyperchromatic nuclei in pale cytoplasm;
- 2 stroma: pink fibres with sparse elongated nuclei aligned to them;
- 3 inflammatory: dense small round dark nuclei (lymphocytes);
- 4 necrosis: pale blotchy eosinophilic debris with fragmented nuclei.

Morphology, not colour, separates classes 1-4: their nuclei and their cytoplasm or
matrix have overlapping stain concentrations, and every tile jitters those further, so
a per-pixel colour classifier cannot reach what a network that sees shapes reaches.
Concentrations are rendered to RGB with the Beer-Lambert law (:mod:`fedcl.data.stain`),
then blurred by a point-spread function and given sensor noise.

Everything is deterministic for a seed: tile ``i`` of a stream depends only on the
stream's seed and ``i`` (not on how many tiles are drawn).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from fedcl.data.stain import Stain

CLASS_NAMES = ("background", "tumor", "stroma", "inflammatory", "necrosis")
NUM_CLASSES = len(CLASS_NAMES)
# Default share of regions per class: tissue-rich tiles, as a pathologist's ROI.
DEFAULT_CLASS_MIX = (0.10, 0.26, 0.28, 0.18, 0.18)

_SHIFT = 4  # cv2 drawing with 4 fractional bits: sub-pixel nucleus positions
_SCALE = 1 << _SHIFT


def smooth_noise(rng: np.random.Generator, size: int, cell: float) -> np.ndarray:
    """Smooth random field of shape ``size x size``, roughly in -1..1.

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness.
    size : int
        Side of the field in pixels.
    cell : float
        Correlation length in pixels (the size of a blob).
    """
    coarse = max(2, int(np.ceil(size / cell)) + 1)
    grid = rng.standard_normal((coarse, coarse)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def tissue_layout(
    rng: np.random.Generator, size: int, class_mix: Sequence[float], regions_per_64: float = 3.0
) -> np.ndarray:
    """Partition a tile into classed regions.

    ``regions_per_64``: mean number of regions per 64 x 64 px (more for bigger tiles:
    the same magnification).

    Returns
    -------
    np.ndarray
        ``size x size`` uint8 class map.
    """
    mean_regions = regions_per_64 * (size / 64) ** 2
    n_regions = int(np.clip(rng.poisson(mean_regions), 1, None)) + 1
    seeds = rng.uniform(0, size, (n_regions, 2)).astype(np.float32)
    classes = rng.choice(NUM_CLASSES, size=n_regions, p=np.asarray(class_mix))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = 0.18 * 64  # boundaries wander by ~a dozen pixels: organic, not polygonal
    xx = xx + warp * smooth_noise(rng, size, 24)
    yy = yy + warp * smooth_noise(rng, size, 24)
    distance = (xx[None] - seeds[:, 0, None, None]) ** 2 + (yy[None] - seeds[:, 1, None, None]) ** 2
    return classes[np.argmin(distance, axis=0)].astype(np.uint8)


def draw_ellipse(
    canvas: np.ndarray,
    centre: tuple[float, float],
    axes: tuple[float, float],
    angle: float,
    value: float,
) -> None:
    """Draw one filled ellipse (semi-axes and centre in pixels, angle in degrees)."""
    cv2.ellipse(
        canvas,
        (int(centre[0] * _SCALE), int(centre[1] * _SCALE)),
        (max(1, int(axes[0] * _SCALE)), max(1, int(axes[1] * _SCALE))),
        float(angle),
        0,
        360,
        float(value),
        thickness=-1,
        lineType=cv2.LINE_8,
        shift=_SHIFT,
    )


def draw_nuclei(
    canvas: np.ndarray,
    rng: np.random.Generator,
    count: int,
    axes: tuple[tuple[float, float], tuple[float, float]],
    intensity: tuple[float, float],
    angle: float | None = None,
    vesicular: float = 0.0,
) -> None:
    """Draw ``count`` filled ellipses into ``canvas`` (later ones on top).

    ``axes`` gives the uniform ranges of the major and minor semi-axis in pixels;
    ``angle`` fixes the orientation (degrees), otherwise it is random;
    ``vesicular`` > 0 lightens the centre of each nucleus by that fraction (open
    chromatin with a rim, as in many carcinoma nuclei).
    """
    size = canvas.shape[0]
    centres = rng.uniform(-2, size + 2, (count, 2))
    majors = rng.uniform(*axes[0], count)
    minors = np.minimum(rng.uniform(*axes[1], count), majors)
    angles = rng.uniform(0, 180, count) if angle is None else angle + rng.normal(0, 12, count)
    values = rng.uniform(*intensity, count)
    rings = (1.0, 0.55) if vesicular > 0 else (1.0,)
    for (cx, cy), a, b, theta, value in zip(centres, majors, minors, angles, values, strict=True):
        for ring in rings:
            shade = value * (1 - vesicular) if ring < 1 else value
            draw_ellipse(canvas, (cx, cy), (ring * a, ring * b), theta, shade)


def nuclei_count(size: int, per_64: float, rng: np.random.Generator) -> int:
    """Poisson number of objects at ``per_64`` per 64 x 64 px on a ``size`` px tile."""
    return int(rng.poisson(per_64 * (size / 64) ** 2))


def render_solid(label: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Hematoxylin and eosin concentration maps of a whole tile of one class.

    The default tissue architecture: solid tumour sheets, wavy fibrous stroma,
    lymphocytic infiltrates, necrosis with fragmented and ghost nuclei.
    """
    nuclei = np.zeros((size, size), np.float32)
    chromatin = 1.0 + 0.25 * smooth_noise(rng, size, 1.5)  # coarse chromatin texture
    if label == 0:  # glass with faint debris
        e = 0.03 + 0.02 * np.abs(smooth_noise(rng, size, 6))
        draw_nuclei(nuclei, rng, nuclei_count(size, 3, rng), ((0.5, 1.2), (0.4, 1.0)), (0.1, 0.3))
        return 0.01 + nuclei, e
    if label == 1:  # tumor: crowded large pleomorphic nuclei, little cytoplasm
        e = 0.34 * (1 + 0.2 * smooth_noise(rng, size, 5))
        draw_nuclei(
            nuclei,
            rng,
            nuclei_count(size, 70, rng),
            ((3.0, 4.8), (2.2, 4.0)),
            (0.75, 1.0),
            vesicular=0.5,
        )
        # irregular outlines: erode the ellipses with fine noise
        nuclei *= smooth_noise(rng, size, 2.0) > -0.9
        return 0.10 + nuclei * chromatin, e
    if label == 2:  # stroma: fibres (a wave along a smoothly bending direction)
        theta = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        phase = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / 4.5)
        phase += 2.5 * smooth_noise(rng, size, 16)
        e = 0.52 + 0.24 * np.sin(phase)
        draw_nuclei(
            nuclei,
            rng,
            nuclei_count(size, 12, rng),
            ((3.0, 5.0), (0.8, 1.3)),
            (0.7, 1.0),
            angle=float(np.degrees(theta)) + 90,
        )
        return 0.04 + nuclei * chromatin, e
    if label == 3:  # inflammatory: dense small round dark nuclei
        e = 0.30 * (1 + 0.2 * smooth_noise(rng, size, 5))
        draw_nuclei(
            nuclei, rng, nuclei_count(size, 330, rng), ((1.2, 1.9), (1.1, 1.8)), (0.8, 1.05)
        )
        return 0.06 + nuclei * chromatin, e
    # necrosis: blotchy eosinophilic debris, karyorrhectic fragments, ghost nuclei
    e = 0.42 * (1 + 0.45 * smooth_noise(rng, size, 3))
    draw_nuclei(nuclei, rng, nuclei_count(size, 14, rng), ((2.5, 4.0), (2.0, 3.5)), (0.15, 0.3))
    draw_nuclei(nuclei, rng, nuclei_count(size, 170, rng), ((0.6, 1.4), (0.4, 1.0)), (0.5, 0.95))
    return 0.08 + nuclei, np.clip(e, 0.05, None)


@dataclass(frozen=True)
class Tissue:
    """A tissue architecture: how regions are laid out and how each class looks.

    ``render(label, rng, size)`` gives the ``size x size`` hematoxylin and eosin
    concentration maps of a whole tile of class ``label``; ``regions_per_64`` is the
    mean number of regions per 64 x 64 px (the scale of the architecture).
    """

    name: str
    render: Callable[[int, np.random.Generator, int], tuple[np.ndarray, np.ndarray]]
    regions_per_64: float = 3.0


SOLID = Tissue("solid", render_solid)


def render_tile(
    rng: np.random.Generator,
    size: int,
    stain: Stain,
    class_mix: Sequence[float] = DEFAULT_CLASS_MIX,
    tissue: Tissue = SOLID,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate one tile.

    Parameters
    ----------
    rng : np.random.Generator
        Source of randomness for this tile.
    size : int
        Side in pixels (64 default elsewhere; 128 and 256 show more tissue at the
        same magnification).
    stain : Stain
        The staining/scanning protocol that renders the concentrations.
    class_mix : sequence of 5 floats
        Probability of each class per tissue region.
    tissue : Tissue
        The tissue architecture (default: solid tumour, :data:`SOLID`).

    Returns
    -------
    image : np.ndarray
        ``size x size x 3`` uint8 RGB.
    mask : np.ndarray
        ``size x size`` uint8 class indices, exact per pixel.
    """
    concentrations, mask = tile_concentrations(rng, size, class_mix, tissue)
    rgb = stain.render(concentrations)
    rgb += rng.normal(0, 2.5, rgb.shape).astype(np.float32)  # sensor noise
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def tile_concentrations(
    rng: np.random.Generator,
    size: int,
    class_mix: Sequence[float] = DEFAULT_CLASS_MIX,
    tissue: Tissue = SOLID,
) -> tuple[np.ndarray, np.ndarray]:
    """Return the tissue of one tile before staining.

    ``size x size x 2`` H and E concentrations (as the optics blur them) and the
    ``size x size`` class mask.
    """
    mask = tissue_layout(rng, size, class_mix, tissue.regions_per_64)
    concentrations = np.zeros((size, size, 2), np.float32)
    for label in np.unique(mask):
        h, e = tissue.render(int(label), rng, size)
        region = mask == label
        concentrations[region, 0] = h[region]
        concentrations[region, 1] = e[region]
    # Tile-to-tile variation inside one slide (section thickness, local staining).
    concentrations *= np.exp(rng.normal(0, 0.12, 2)).astype(np.float32)
    return cv2.GaussianBlur(concentrations, (0, 0), sigmaX=0.6), mask  # optics PSF


@functools.cache
def typical_tissue() -> np.ndarray:
    """Return ``N x 2`` concentrations of typical tissue: 8 tiles of 64 px, default mix.

    From a fixed seed (a property of the generator, not of a run); every 4th pixel.
    """
    rng = np.random.default_rng(20261126)
    tiles = [tile_concentrations(rng, 64)[0] for _ in range(8)]
    return np.concatenate([t.reshape(-1, 2)[::4] for t in tiles])


def generate_tiles(
    count: int,
    *,
    size: int,
    stain: Stain,
    seed: np.random.SeedSequence,
    class_mix: Sequence[float] = DEFAULT_CLASS_MIX,
    tissue: Tissue = SOLID,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate ``count`` tiles from one deterministic stream.

    Parameters
    ----------
    count : int
        Number of tiles.
    size : int
        Tile side in pixels.
    stain : Stain
        Protocol rendering every tile of the stream.
    seed : np.random.SeedSequence
        Stream seed; tile ``i`` uses its ``i``-th child, so a prefix of a longer
        stream equals a shorter stream.
    class_mix : sequence of 5 floats
        Probability of each class per region.
    tissue : Tissue
        The tissue architecture of every tile (default :data:`SOLID`).

    Returns
    -------
    images : np.ndarray
        ``count x size x size x 3`` uint8.
    masks : np.ndarray
        ``count x size x size`` uint8.
    """
    if size < 16:
        raise ValueError(f"tile size must be at least 16 px, got {size}")
    if len(class_mix) != NUM_CLASSES or min(class_mix) < 0 or sum(class_mix) <= 0:
        raise ValueError(
            f"class_mix must be {NUM_CLASSES} non-negative weights, got {tuple(class_mix)}"
        )
    mix = tuple(float(w) / float(sum(class_mix)) for w in class_mix)
    images = np.empty((count, size, size, 3), np.uint8)
    masks = np.empty((count, size, size), np.uint8)
    for i in range(count):
        # Not seed.spawn(): that advances the SeedSequence, so a second call differs.
        child = np.random.SeedSequence(seed.entropy, spawn_key=(*seed.spawn_key, i))
        images[i], masks[i] = render_tile(np.random.default_rng(child), size, stain, mix, tissue)
    return images, masks
