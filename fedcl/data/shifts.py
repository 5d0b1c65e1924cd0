"""Client-drift shifts applied to a hospital's tiles (docs/design.md, section 2).

``stain`` acts in the stain model itself (re-rendering the same tissue with another
protocol, see :func:`drifted_stain`): the tiles are rendered from known H and E
concentrations, so a new stain matrix is exact, where albumentations' ``HEStain`` would
have to estimate the matrix back from RGB first. The image-domain shifts use albumentations
(``GaussianBlur``, ``GaussNoise``, ``ImageCompression``); ``label-noise`` corrupts the
masks (annotators who mislabel whole regions, each at random); ``annotation`` biases them
the same way on every tile (annotators who call inflammation tumour and draw every region
too tightly, :func:`bias_annotations`): what the weights learn changes, which no
re-estimated normalisation statistic undoes. ``invert`` blends the tile with its colour
negative. ``strength`` in 0..1 scales every kind from none to extreme.
"""

from __future__ import annotations

import functools
import os

import cv2
import numpy as np

from fedcl.data.real import IGNORE
from fedcl.data.stain import Stain, perturb, shifted, visible_change
from fedcl.data.synthetic import CLASS_NAMES, typical_tissue
from fedcl.scenarios.sections import DRIFT_KINDS

__all__ = [
    "CONFUSED",
    "DRIFT_KINDS",
    "IMAGE_KINDS",
    "MAX_EROSION",
    "bias_annotations",
    "drifted_stain",
    "shift_images",
    "shift_labels",
    "typical_change",
    "typical_shift",
]

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # no network call on import
import albumentations as A  # noqa: E402

IMAGE_KINDS = ("blur", "noise", "jpeg", "invert")  # kinds that transform the pixels
# drift-kind annotation: the class its annotators see as another (inflammatory infiltrates
# called tumour: dense dark nuclei in both), and how far inside a region's boundary they
# draw at strength 1: 4 px give about a quarter of the synthetic tiles' foreground to the
# background (docs/scenarios.md)
CONFUSED = (CLASS_NAMES.index("inflammatory"), CLASS_NAMES.index("tumor"))
MAX_EROSION = 4


@functools.cache
def typical_change(strength: float) -> float:
    """Return the median visible size of random ``strength`` shifts of the reference stain.

    :func:`~fedcl.data.stain.visible_change` on :func:`~fedcl.data.synthetic.typical_tissue`,
    over 201 draws of a fixed generator: a property of the stain model, not of a seed.
    """
    rng, tissue = np.random.default_rng(0), typical_tissue()
    sizes = [
        visible_change(Stain(), shifted(Stain(), strength, rng.standard_normal(11)), tissue)
        for _ in range(201)
    ]
    return float(np.median(sizes))


def typical_shift(stain: Stain, rng: np.random.Generator, strength: float) -> Stain:
    """Shift ``stain`` in a random direction by the typical visible size of ``strength``.

    The draws (as :func:`~fedcl.data.stain.perturb`'s) choose only the direction; the
    distance along it is the one whose change in the pixels of typical tissue is
    :func:`typical_change` of ``strength``, so ``strength`` is what every seed gets.
    (Measured: scaling the draws to their typical norm in parameter space still left
    seed 2's drifted hospitals 12 and 22 grey levels from their clean tiles and seeds 0
    and 1's 36 to 57: the stain vectors are renormalised and parameters partly cancel
    in the pixels; seed 2's drift barely hurt FedAvg.)
    """
    if strength <= 0:
        return perturb(stain, rng, strength)
    z, target, tissue = rng.standard_normal(11), typical_change(strength), typical_tissue()
    low, high = 0.0, 4.0 * strength  # how far to move along z
    if visible_change(stain, shifted(stain, high, z), tissue) <= target:
        return shifted(stain, high, z)  # a direction that changes little: as far as allowed
    for _ in range(30):  # bisection: the change grows along the direction
        middle = (low + high) / 2
        if visible_change(stain, shifted(stain, middle, z), tissue) < target:
            low = middle
        else:
            high = middle
    return shifted(stain, high, z)


def drifted_stain(site: Stain, rng: np.random.Generator, strength: float) -> Stain:
    """Return a drifted hospital's protocol: its site stain shifted by ``1.5 * strength``.

    At strength 1 the shift exceeds :func:`~fedcl.data.stain.perturb`'s "different
    scanner and staining protocol" (1.0): a strongly, visibly different hospital, as
    visibly for every seed (:func:`typical_shift`; only its direction is random).
    """
    return typical_shift(site, rng, 1.5 * strength)


def _albumentation(kind: str, strength: float, seed: int) -> A.Compose:
    if kind == "blur":
        sigma = 0.5 + 2.5 * strength
        transform = A.GaussianBlur(sigma_limit=(sigma, sigma), p=1.0)
    elif kind == "noise":
        std = max(0.25 * strength, 1e-3)
        transform = A.GaussNoise(std_range=(std, std), p=1.0)
    elif kind == "jpeg":
        quality = int(round(100 - 95 * strength))
        transform = A.ImageCompression(quality_range=(quality, quality), p=1.0)
    else:
        raise ValueError(f"no albumentations transform for drift kind {kind!r}")
    return A.Compose([transform], seed=seed)


def shift_images(images: np.ndarray, kind: str, strength: float, seed: int) -> np.ndarray:
    """Apply an image-domain drift to ``N x H x W x 3`` uint8 tiles (new array)."""
    if kind == "invert":
        blended = (1 - strength) * images.astype(np.float32) + strength * (
            255.0 - images.astype(np.float32)
        )
        return np.clip(np.round(blended), 0, 255).astype(np.uint8)
    transform = _albumentation(kind, strength, seed)
    return np.stack([transform(image=image)["image"] for image in images])


def shift_labels(masks: np.ndarray, strength: float, num_classes: int, seed: int) -> np.ndarray:
    """Label noise: per tile, each class present is relabelled with prob. ``strength``.

    The new label is another class drawn uniformly, the same for the whole region of
    that class in that tile (a mislabelled region, not salt-and-pepper noise).
    """
    rng = np.random.default_rng(seed)
    noisy = masks.copy()
    for i, mask in enumerate(masks):
        for label in np.unique(mask):
            if rng.random() < strength:
                others = [c for c in range(num_classes) if c != label]
                noisy[i][mask == label] = rng.choice(others)
    return noisy


def bias_annotations(masks: np.ndarray, strength: float, seed: int) -> np.ndarray:
    """Annotation drift: masks as a hospital's biased annotators draw them, every tile alike.

    Two biases, in this order, both growing with ``strength``:

    1. Class confusion: each connected region (8-connected) of class ``CONFUSED[0]``
       (inflammatory) is labelled ``CONFUSED[1]`` (tumour) with probability
       ``strength``, one draw per region from ``seed``.
    2. Under-segmentation: every foreground region is drawn
       ``r = round(MAX_EROSION * strength)`` px inside its boundary. A foreground
       pixel with a pixel of another label (``IGNORE`` included) within a disk of
       radius ``r`` becomes background (0); the tile's edge is no boundary (the region
       goes on beyond it). Regions narrower than ``2 r + 1`` px vanish.

    Background and :data:`~fedcl.data.real.IGNORE` pixels never change, and no pixel
    becomes ``IGNORE``. Unlike ``label-noise`` (:func:`shift_labels`: a random new class
    for random regions), the direction of every change is the same on every tile.

    Parameters
    ----------
    masks : np.ndarray
        ``N x H x W`` uint8 class ids: 0 background, 1..C-1 foreground (synthetic:
        :data:`~fedcl.data.synthetic.CLASS_NAMES`), ``IGNORE`` (255) not a class.
    strength : float
        0 (the masks unchanged) .. 1 (every inflammatory region called tumour, 4-px
        rims erased).
    seed : int
        Seed of the per-region draws of the confusion: the same masks, strength and
        seed give the same result.

    Returns
    -------
    np.ndarray
        New ``N x H x W`` uint8 masks; ``masks`` is not changed.
    """
    rng = np.random.default_rng(seed)
    source, target = CONFUSED
    radius = int(round(MAX_EROSION * strength))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    biased = masks.copy()
    for mask in biased:  # views: each tile is changed in place
        count, regions = cv2.connectedComponents((mask == source).astype(np.uint8), connectivity=8)
        confused = 1 + np.flatnonzero(rng.random(count - 1) < strength)  # 0: not the class
        mask[np.isin(regions, confused)] = target
        # cv2's default border leaves the edge out of the minimum and the maximum
        mixed = cv2.erode(mask, disk) != cv2.dilate(mask, disk)  # another label within r
        mask[mixed & (mask != 0) & (mask != IGNORE)] = 0
    return biased
