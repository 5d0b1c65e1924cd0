"""The built-in scenarios' tiles: synthetic tissue per hospital and stage, or real tiles.

Pure functions of the config, the hospital, the stage and whether the hospital drifts
(the scenario classes, :mod:`fedcl.scenarios.builtin`, decide which, round by round):
the stage's stain, class mix, tissue architecture and annotated classes, each hospital's
own site stain, and real data split into test and training tiles. What drifts and what
shifts are the built-ins' own keys (:mod:`fedcl.scenarios.sections`).
"""

from __future__ import annotations

import numpy as np

from fedcl import seeds
from fedcl.config import RunConfig
from fedcl.data.dataset import TileDataset
from fedcl.data.real import (
    IGNORE,
    hospital_slides,
    hospital_tiles,
    index_slides,
    label_table,
    parse_data,
)
from fedcl.data.shifts import (
    IMAGE_KINDS,
    bias_annotations,
    drifted_stain,
    shift_images,
    shift_labels,
    typical_shift,
)
from fedcl.data.stain import Stain, perturb
from fedcl.data.synthetic import DEFAULT_CLASS_MIX, NUM_CLASSES, SOLID, Tissue, generate_tiles
from fedcl.data.tissue import TISSUES
from fedcl.errors import FedclError
from fedcl.scenarios import scenario_of
from fedcl.scenarios.sections import DriftSettings, StageShiftSettings

SPLITS = ("train", "test")


def shifts(config: RunConfig, what: str) -> bool:
    """Whether ``what`` (a stage shift) changes between the stages of this run."""
    shift = config.section(StageShiftSettings).stage_shift
    return scenario_of(config).staged and shift == what


def stage_stain(config: RunConfig, stage: int) -> Stain:
    """Return the protocol every hospital shares in ``stage`` (stage 0: the reference stain)."""
    if stage == 0 or not shifts(config, "stain"):
        return Stain()
    # every seed's stages differ as visibly (only the direction is random)
    return typical_shift(
        Stain(),
        seeds.rng(config.seed, seeds.STAGE, stage),
        1.5 * config.section(StageShiftSettings).forgetting_strength,
    )


# Log-normal spread of a class's share from stage to stage at forgetting-strength 1: a
# share typically doubles or halves, as a new cohort's patient mix does (why not more:
# docs/decision-log.md, "stain drifts of typical parameter size").
MIX_SHIFT = 1.0


def stage_class_mix(config: RunConfig, stage: int) -> tuple[float, ...]:
    """Return the class mix of ``stage``: the default mix re-weighted per stage (patient mix)."""
    if stage == 0 or not shifts(config, "stain"):
        return DEFAULT_CLASS_MIX
    rng = seeds.rng(config.seed, seeds.STAGE, stage, 1)
    weights = np.asarray(DEFAULT_CLASS_MIX) * np.exp(
        MIX_SHIFT
        * config.section(StageShiftSettings).forgetting_strength
        * rng.standard_normal(NUM_CLASSES)
    )
    return tuple(float(w) for w in weights / weights.sum())


def stage_tissue(config: RunConfig, stage: int) -> Tissue:
    """Return the tissue architecture of ``stage`` (solid tumour unless it shifts)."""
    return TISSUES[stage] if shifts(config, "tissue") else SOLID


def stage_classes(config: RunConfig, stage: int) -> tuple[int, ...]:
    """Return the foreground classes the masks of ``stage`` annotate (all unless they shift).

    The classes 1..C-1 split into ``stages`` consecutive groups, the first ones larger
    (3 stages: tumour and stroma, then inflammatory, then necrosis).
    """
    foreground = np.arange(1, NUM_CLASSES)
    if not shifts(config, "classes"):
        return tuple(int(c) for c in foreground)
    return tuple(int(c) for c in np.array_split(foreground, config.stages)[stage])


def annotate(masks: np.ndarray, classes: tuple[int, ...], split: str) -> np.ndarray:
    """Masks as a stage annotates them: only ``classes`` labelled.

    Training masks call every other class background (what a new cohort's annotators
    hand over: the background shift of continual segmentation). Test masks leave the
    other classes out of the score (``IGNORE``), so a stage's Dice measures its classes.
    """
    others = ~np.isin(masks, (0, *classes))
    return np.where(others, 0 if split == "train" else IGNORE, masks).astype(masks.dtype)


def site_stain(config: RunConfig, hospital: int, stage: int = 0) -> Stain:
    """Return the hospital's own protocol in ``stage``: the stage stain, mildly perturbed."""
    return perturb(
        stage_stain(config, stage),
        seeds.rng(config.seed, seeds.SITE_STAIN, hospital),
        config.site_stain,
    )


def hospital_dataset(
    config: RunConfig,
    hospital: int,
    split: str,
    *,
    stage: int = 0,
    drifted: bool = False,
    classes: tuple[int, ...] | None = None,
) -> TileDataset:
    """Tiles of ``hospital`` (0-based) for ``split`` in ``stage``, optionally drifted.

    ``classes``: under the class shift, the classes the masks annotate instead of the
    stage's own (:func:`stage_classes`): the same tiles relabelled, as a bound that keeps
    every stage's tiles has them annotated with every class known so far.

    The test split is a disjoint seed stream with the same site stain. Drifted tiles
    are the same tissue as the clean ones (same seed stream), shifted by ``drift-kind``.
    Biased annotators (``annotation``) see the tissue before a stage's protocol picks
    the classes they label (``stage-shift = classes``, :func:`annotate`); the other
    kinds act on the tiles as the stage hands them over.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= hospital < config.clients:
        raise ValueError(f"hospital must be in 0..{config.clients - 1}, got {hospital}")
    drift = config.section(DriftSettings)
    kind, strength = drift.drift_kind, drift.drift_strength
    shift_seed = int(seeds.stream(config.seed, seeds.DRIFT, hospital, stage).generate_state(1)[0])
    if config.data != "synthetic":
        images, masks = real_split(config, hospital, split)
    else:
        stain = site_stain(config, hospital, stage)
        if drifted and kind == "stain":
            stain = drifted_stain(stain, seeds.rng(config.seed, seeds.DRIFT, hospital), strength)
        stream = seeds.stream(config.seed, seeds.TILES, hospital, SPLITS.index(split), stage)
        images, masks = generate_tiles(
            config.train_tiles if split == "train" else config.test_tiles,
            size=config.image_size,
            stain=stain,
            seed=stream,
            class_mix=stage_class_mix(config, stage),
            tissue=stage_tissue(config, stage),
        )
    if drifted and kind == "annotation":
        masks = bias_annotations(masks, strength, shift_seed)
    if shifts(config, "classes"):  # staged: synthetic data only (Builtin.check)
        masks = annotate(masks, stage_classes(config, stage) if classes is None else classes, split)
    if drifted and kind in IMAGE_KINDS:
        images = shift_images(images, kind, strength, shift_seed)
    if drifted and kind == "label-noise":
        masks = shift_labels(masks, strength, NUM_CLASSES, shift_seed)
    return TileDataset(images, masks, NUM_CLASSES)


def hospital_sources(config: RunConfig) -> list[str]:
    """Describe where each hospital's tiles come from (``A1, B6``: real data's sites)."""
    if config.data == "synthetic":
        drifted = scenario_of(config).drifted_hospitals()
        return [
            "synthetic, own site stain" + (", drifted" if h in drifted else "")
            for h in range(config.clients)
        ]
    spec = parse_data(config.data)
    slides = hospital_slides(index_slides(spec, config.data_split), config.clients)
    return [", ".join(sorted({s.site for s in mine})) for mine in slides]


def provenance(config: RunConfig) -> dict[str, object]:
    """Describe what a run used: its data, each hospital's source, the server's own tiles."""
    server_tiles = (
        "synthetic, a broad mix of stains, disjoint from every hospital's tiles"
        if config.server_data == "synthetic"
        else f"from {config.server_data}"
    )
    return {
        "data": config.data,
        "hospitals": {str(h): source for h, source in enumerate(hospital_sources(config))},
        "reference_set": (
            f"{config.reference_size} tiles, {server_tiles} (dbc, fedavg-server-stats)"
        ),
        "root_set": f"{config.root_tiles} labelled tiles, {server_tiles} (fltrust)",
        "evaluation": f"at the {config.evaluation}, on {config.test_tiles} held-out tiles per "
        "hospital and stage",
    }


def check_data(config: RunConfig) -> None:
    """Read every hospital's real data once (nothing for synthetic data).

    Called before a run starts, so that a bad file is a clear error (exit 2) rather
    than a failing hospital in the middle of a run.
    """
    if config.data != "synthetic":
        for hospital in range(config.clients):
            real_split(config, hospital, "test")


def real_split(config: RunConfig, hospital: int, split: str) -> tuple[np.ndarray, np.ndarray]:
    """``hospital``'s real tiles of ``split``: test first, then train, from one shuffle."""
    spec = parse_data(config.data)
    slides = hospital_slides(index_slides(spec, config.data_split), config.clients)[hospital]
    table = label_table(spec.kind, config.label_map)
    stream = seeds.stream(config.seed, seeds.TILES, hospital)
    images, masks = hospital_tiles(slides, table, config.image_size, stream)
    if len(images) <= config.test_tiles:
        raise FedclError(
            f"hospital {hospital} ({', '.join(sorted({s.site for s in slides}))}) has "
            f"{len(images)} usable {config.image_size}-px tiles: not more than test-tiles = "
            f"{config.test_tiles}; lower test-tiles or add data"
        )
    test = slice(0, config.test_tiles)
    train = slice(config.test_tiles, config.test_tiles + config.train_tiles)
    part = test if split == "test" else train
    return images[part], masks[part]
