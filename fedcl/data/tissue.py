"""Tissue architectures other than solid tumour: what a new patient population looks like.

The ``tissue`` stage shift gives each stage of a forgetting scenario its own
architecture: the five classes stay, but their shapes, textures and scales change, so a
network must learn new features rather than new colours (a stain change is undone by
re-estimating BatchNorm statistics; an architecture change is not). Some appearances
deliberately echo another class of another architecture, as they do in pathology:
small-cell tumour cords resemble a lymphocytic infiltrate, spindle-cell tumour
resembles fibrous stroma, gland lumens resemble empty glass. A network trained on one
architecture after another therefore has to overwrite part of what it learned.

Each renderer returns the hematoxylin and eosin concentration maps of a whole tile of
one class (``size x size`` float32), as :func:`fedcl.data.synthetic.render_solid`.
"""

from __future__ import annotations

import numpy as np

from fedcl.data.synthetic import (
    SOLID,
    Tissue,
    draw_ellipse,
    draw_nuclei,
    nuclei_count,
    smooth_noise,
)

Maps = tuple[np.ndarray, np.ndarray]


def _fibres(rng: np.random.Generator, size: int, period: float, wander: float) -> np.ndarray:
    """``sin`` of a wave along a smoothly bending direction: collagen fibres, -1..1."""
    theta = rng.uniform(0, np.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    phase = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period)
    return np.sin(phase + wander * smooth_noise(rng, size, 16))


def _chromatin(rng: np.random.Generator, size: int) -> np.ndarray:
    return 1.0 + 0.25 * smooth_noise(rng, size, 1.5)


def _glands(rng: np.random.Generator, size: int) -> Maps:
    """Tumour glands: a ring of columnar nuclei around a pale lumen, in pink cytoplasm."""
    nuclei = np.zeros((size, size), np.float32)
    lumen = np.zeros((size, size), np.float32)
    for _ in range(nuclei_count(size, 14, rng) + 1):
        cx, cy = rng.uniform(0, size, 2)
        radius = rng.uniform(5.0, 9.0)
        draw_ellipse(lumen, (cx, cy), (0.55 * radius, 0.55 * radius), 0, 1.0)
        ring = max(6, int(2 * np.pi * radius / 2.3))
        for angle in np.linspace(0, 2 * np.pi, ring, endpoint=False) + rng.uniform(0, 1):
            r = 0.85 * radius + rng.normal(0, 0.3)
            centre = (cx + r * np.cos(angle), cy + r * np.sin(angle))
            axes = (rng.uniform(2.0, 2.8), rng.uniform(0.9, 1.3))
            draw_ellipse(nuclei, centre, axes, np.degrees(angle), rng.uniform(0.75, 1.0))
    e = np.where(lumen > 0, 0.04, 0.30 * (1 + 0.15 * smooth_noise(rng, size, 5)))
    h = np.where(lumen > 0, 0.02, 0.08 + nuclei * _chromatin(rng, size))
    return h.astype(np.float32), e.astype(np.float32)


def render_glandular(label: int, rng: np.random.Generator, size: int) -> Maps:
    """Glandular adenocarcinoma: glands, dense collagen, plasma cells, dirty necrosis."""
    nuclei = np.zeros((size, size), np.float32)
    if label == 1:
        return _glands(rng, size)
    if label == 2:  # dense collagen: thick fibres, few nuclei
        e = 0.60 + 0.15 * _fibres(rng, size, 8.0, 1.5)
        draw_nuclei(nuclei, rng, nuclei_count(size, 6, rng), ((3.0, 4.5), (0.8, 1.2)), (0.7, 0.95))
        return 0.04 + nuclei, e.astype(np.float32)
    if label == 3:  # lymphoplasmacytic: loose lymphocytes and eccentric plasma cells
        e = 0.20 * (1 + 0.2 * smooth_noise(rng, size, 5))
        draw_nuclei(nuclei, rng, nuclei_count(size, 120, rng), ((1.2, 1.9), (1.1, 1.8)), (0.8, 1.0))
        draw_nuclei(
            nuclei,
            rng,
            nuclei_count(size, 30, rng),
            ((2.0, 2.6), (1.6, 2.0)),
            (0.7, 0.9),
            vesicular=0.3,
        )
        return 0.05 + nuclei * _chromatin(rng, size), e
    if label == 4:  # dirty necrosis: eosinophilic debris full of nuclear dust
        e = 0.38 * (1 + 0.35 * smooth_noise(rng, size, 3))
        draw_nuclei(nuclei, rng, nuclei_count(size, 300, rng), ((0.4, 0.9), (0.3, 0.8)), (0.4, 0.8))
        return 0.10 + nuclei, np.clip(e, 0.05, None)
    return SOLID.render(label, rng, size)


def _cords(rng: np.random.Generator, size: int) -> np.ndarray:
    """Small uniform tumour cells in single-file cords (lobular / small-cell pattern)."""
    nuclei = np.zeros((size, size), np.float32)
    for _ in range(nuclei_count(size, 7, rng) + 1):
        x, y = rng.uniform(0, size, 2)
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(int(size / 3)):
            axes = (rng.uniform(1.7, 2.5), rng.uniform(1.4, 2.0))
            draw_ellipse(nuclei, (x, y), axes, np.degrees(heading), rng.uniform(0.85, 1.05))
            heading += rng.normal(0, 0.25)
            x, y = x + 3.3 * np.cos(heading), y + 3.3 * np.sin(heading)
    return nuclei


def render_infiltrative(label: int, rng: np.random.Generator, size: int) -> Maps:
    """Infiltrative carcinoma in an inflamed field.

    Tumour cords, myxoid stroma, lymphoid aggregates with germinal centres, comedo
    necrosis with ghost nuclei.
    """
    nuclei = np.zeros((size, size), np.float32)
    if label == 1:
        e = 0.22 * (1 + 0.2 * smooth_noise(rng, size, 5))
        return 0.06 + _cords(rng, size) * _chromatin(rng, size), e
    if label == 2:  # myxoid stroma: pale, loose, plump fibroblasts
        e = 0.22 + 0.08 * _fibres(rng, size, 6.0, 3.0) + 0.05 * smooth_noise(rng, size, 4)
        draw_nuclei(nuclei, rng, nuclei_count(size, 10, rng), ((2.5, 3.5), (1.4, 2.0)), (0.6, 0.85))
        return 0.05 + nuclei, e.astype(np.float32)
    if label == 3:  # lymphoid aggregate; a germinal centre of larger, paler cells
        centre = smooth_noise(rng, size, 20) > 0.6
        e = 0.28 * (1 + 0.2 * smooth_noise(rng, size, 5))
        dense = np.zeros((size, size), np.float32)
        draw_nuclei(
            dense, rng, nuclei_count(size, 450, rng), ((1.1, 1.7), (1.0, 1.6)), (0.85, 1.05)
        )
        draw_nuclei(
            nuclei,
            rng,
            nuclei_count(size, 60, rng),
            ((2.2, 3.0), (1.8, 2.6)),
            (0.5, 0.7),
            vesicular=0.4,
        )
        nuclei = np.where(centre, nuclei, dense)
        return 0.06 + nuclei * _chromatin(rng, size), e
    if label == 4:  # comedo necrosis: homogeneous pink with ghost nuclei
        e = 0.50 * (1 + 0.08 * smooth_noise(rng, size, 6))
        draw_nuclei(nuclei, rng, nuclei_count(size, 25, rng), ((2.5, 4.0), (2.0, 3.5)), (0.1, 0.25))
        draw_nuclei(nuclei, rng, nuclei_count(size, 40, rng), ((0.6, 1.2), (0.4, 1.0)), (0.5, 0.9))
        return 0.06 + nuclei, e
    return SOLID.render(label, rng, size)


def _neutrophils(canvas: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Multi-lobed nuclei: three small blobs close together per cell."""
    size = canvas.shape[0]
    for cx, cy in rng.uniform(0, size, (count, 2)):
        for _ in range(3):
            dx, dy = rng.normal(0, 0.9, 2)
            radius = rng.uniform(0.8, 1.1)
            draw_ellipse(canvas, (cx + dx, cy + dy), (radius, radius), 0, rng.uniform(0.8, 1.0))


def render_spindle(label: int, rng: np.random.Generator, size: int) -> Maps:
    """Sarcomatoid carcinoma.

    Spindle-cell fascicles, hyalinised stroma, neutrophils, geographic necrosis.
    """
    nuclei = np.zeros((size, size), np.float32)
    if label == 1:  # fascicles of crowded spindle nuclei
        angle = rng.uniform(0, 180)
        e = 0.38 + 0.05 * _fibres(rng, size, 5.0, 2.0)
        draw_nuclei(
            nuclei,
            rng,
            nuclei_count(size, 60, rng),
            ((3.5, 5.5), (0.9, 1.4)),
            (0.8, 1.0),
            angle=angle,
        )
        return 0.07 + nuclei * _chromatin(rng, size), e.astype(np.float32)
    if label == 2:  # hyalinised stroma: homogeneous glassy pink, almost acellular
        e = 0.65 * (1 + 0.08 * smooth_noise(rng, size, 8))
        draw_nuclei(nuclei, rng, nuclei_count(size, 3, rng), ((2.5, 4.0), (0.8, 1.2)), (0.6, 0.9))
        return 0.03 + nuclei, e
    if label == 3:  # acute inflammation: neutrophils
        e = 0.30 * (1 + 0.2 * smooth_noise(rng, size, 5))
        _neutrophils(nuclei, rng, nuclei_count(size, 90, rng))
        return 0.06 + nuclei, e
    if label == 4:  # geographic necrosis: blotchy debris, karyorrhexis
        e = 0.45 * (1 + 0.5 * smooth_noise(rng, size, 4))
        draw_nuclei(nuclei, rng, nuclei_count(size, 220, rng), ((0.5, 1.2), (0.4, 1.0)), (0.5, 0.9))
        draw_nuclei(nuclei, rng, nuclei_count(size, 10, rng), ((2.5, 4.0), (2.0, 3.5)), (0.15, 0.3))
        return 0.08 + nuclei, np.clip(e, 0.05, None)
    return SOLID.render(label, rng, size)


GLANDULAR = Tissue("glandular", render_glandular, regions_per_64=2.5)
INFILTRATIVE = Tissue("infiltrative", render_infiltrative, regions_per_64=4.5)
SPINDLE = Tissue("spindle", render_spindle, regions_per_64=2.0)
# The order stages take them in: solid first, as in every other scenario's first stage.
TISSUES = (SOLID, GLANDULAR, INFILTRATIVE, SPINDLE)
