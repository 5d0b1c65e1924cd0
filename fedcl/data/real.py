"""Real data on disk with the synthetic data's interface: tiles, masks, hospitals.

``data = "KIND:PATH"`` (config key / ``fedcl run --data``) selects it:

- ``bcss:PATH`` - BCSS: ``PATH/images/*.png`` (or the release's
  ``PATH/rgbs_colorNormalized/*.png``) RGB and ``PATH/masks/*.png`` (same file name)
  single-channel masks with BCSS codes 0-21. Code 0 (``outside_roi``) is ignored
  (not a class); the rest is grouped into fedcl's 5 classes (:data:`BCSS_GROUPS`). A
  tile's hospital is its TCGA tissue-source-site code (``TCGA-XX-...``).
- ``semicol:PATH`` - SemiCOL (colorectal), mask codes 1-10 (:data:`SEMICOL_GROUPS`),
  0 = unlabelled (ignored): the layout above, or the challenge's release as it is
  (``.../<case>/image/<name>.png`` beside ``.../<case>/mask/<name>-labelled.png``, e.g.
  ``DATASET_TRAIN/01_MANUAL/DS_M_1/ukk_case_04/``), a case's hospital being its centre
  (``ukk``, ``lmu``: the case name before ``_case``).
- ``folder:PATH`` - any image/mask folder in that layout, with ``label-map`` saying
  what each mask value is (``"0:ignore 1:tumor 2:stroma ..."``).
- ``unlabeled:PATH`` - every image under ``PATH`` (any folders), no masks: for the
  server's unlabeled reference set only (``server-data``), never a hospital's data.

Hospitals: from ``data-split`` (a CSV file ``image,hospital``, e.g. ``x.png,site-3``)
when given; else BCSS's site codes, or a sub-folder per hospital (``images/<site>/``).
Sites are sorted and dealt to the run's hospitals in turn (site ``i`` goes to hospital
``i mod clients``). Large images are cut into non-overlapping ``image-size`` tiles on
the fly; a tile more than half ignored is skipped. Per hospital, a seeded shuffle of
its tiles gives the test split first (``test-tiles``), then the training split
(``train-tiles``), disjoint.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from fedcl.data.synthetic import CLASS_NAMES
from fedcl.errors import FedclError

if TYPE_CHECKING:
    from fedcl.config import RunConfig

IGNORE = 255  # mask value of pixels that are not a class (loss and Dice skip them)
DATA_KINDS = ("synthetic", "bcss", "semicol", "folder", "unlabeled")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
# The folder of RGB images beside masks/: BCSS's release ships rgbs_colorNormalized/.
IMAGE_FOLDERS = {"bcss": ("images", "rgbs_colorNormalized")}

_TUMOR, _STROMA, _INFLAMMATORY, _NECROSIS, _OTHER = 1, 2, 3, 4, 0
# BCSS gtruth codes -> fedcl class (docs/design.md, section 1); 0 outside_roi -> ignore.
BCSS_GROUPS = {0: IGNORE, 1: _TUMOR, 19: _TUMOR, 20: _TUMOR, 2: _STROMA} | {
    3: _INFLAMMATORY, 10: _INFLAMMATORY, 11: _INFLAMMATORY, 4: _NECROSIS,
} | {code: _OTHER for code in (5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 18, 21)}  # fmt: skip
# SemiCOL: 1 tumor, 2 mucosa, 3 tumor stroma, 4 submucosa/vessel/adventitia, 5 muscle,
# 6 lymph, 7 ulcus/necrosis, 8 mucin, 9 blood, 10 background; 0 unlabelled -> ignore.
SEMICOL_GROUPS = {0: IGNORE, 1: _TUMOR, 2: _OTHER, 3: _STROMA, 4: _OTHER, 5: _OTHER} | {
    6: _INFLAMMATORY, 7: _NECROSIS, 8: _OTHER, 9: _OTHER, 10: _OTHER,
}  # fmt: skip


@dataclass(frozen=True)
class DataSpec:
    """Where the tiles come from: ``kind`` (one of :data:`DATA_KINDS`) and ``path``."""

    kind: str
    path: Path | None = None


def parse_data(text: str, key: str = "data") -> DataSpec:
    """Parse the ``data`` key: ``synthetic`` or ``bcss:PATH`` / ``semicol:`` / ``folder:``.

    ``key``: the config key named in the error (``server-data`` takes the same values).
    """
    if text == "synthetic":
        return DataSpec("synthetic")
    kind, sep, path = text.partition(":")
    if not sep or kind not in DATA_KINDS[1:] or not path:
        raise FedclError(
            f"config key {key!r} must be 'synthetic' or KIND:PATH with KIND one of "
            f"{', '.join(DATA_KINDS[1:])}, got {text!r}"
        )
    return DataSpec(kind, Path(path).expanduser())


def parse_label_map(text: str) -> dict[int, int]:
    """Parse ``"0:ignore 1:tumor ..."`` (mask value: class name or ``ignore``)."""
    table: dict[int, int] = {}
    for item in text.replace(",", " ").split():
        value, sep, name = item.partition(":")
        if not sep or not value.isdigit() or not 0 <= int(value) <= 255:
            raise FedclError(
                f"config key 'label-map': {item!r} is not VALUE:CLASS with VALUE in 0..255"
            )
        if name == "ignore":
            table[int(value)] = IGNORE
        elif name in CLASS_NAMES:
            table[int(value)] = CLASS_NAMES.index(name)
        else:
            known = ", ".join([*CLASS_NAMES, "ignore"])
            raise FedclError(f"config key 'label-map': unknown class {name!r}; known: {known}")
    if not table:
        raise FedclError("config key 'label-map' is empty: folder data needs VALUE:CLASS pairs")
    return table


def label_table(kind: str, label_map: str) -> dict[int, int]:
    """Return the mask value -> class table of a data kind."""
    if kind == "bcss":
        return BCSS_GROUPS
    if kind == "semicol":
        return SEMICOL_GROUPS
    if kind == "unlabeled":
        return {}
    return parse_label_map(label_map)


@dataclass(frozen=True)
class Slide:
    """One image and its mask on disk, and the site (hospital) it comes from."""

    image: Path
    mask: Path | None  # None: unlabeled (every pixel ignored)
    site: str


_TCGA_SITE = re.compile(r"TCGA-([A-Z0-9]{2})-", re.IGNORECASE)


def index_slides(spec: DataSpec, split_file: str = "", *, by_site: bool = True) -> list[Slide]:
    """Every image with its mask and site, sorted; errors name the file and the fix.

    ``by_site=False``: the sites do not matter (the server's own tiles): every slide's
    site is ``"server"``.
    """
    if spec.path is None:
        raise ValueError("index_slides needs a real data spec (KIND:PATH), not synthetic")
    root = spec.path
    if not root.exists():
        raise FedclError(f"data folder {str(root)!r} does not exist")
    if spec.kind == "unlabeled":
        return _unlabeled(root)
    if spec.kind == "semicol" and not (root / "images").is_dir():
        released = _semicol_release(root, split_file, by_site)
        if released:
            return released
    names = IMAGE_FOLDERS.get(spec.kind, ("images",))
    images_dir = next((root / n for n in names if (root / n).is_dir()), root / names[0])
    masks_dir = root / "masks"
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            expected = " or ".join(f"{n}/" for n in names)
            raise FedclError(
                f"data folder {str(root)!r} has no {folder.name}/ sub-folder: expected "
                f"{expected} (RGB tiles or slides) and masks/ (one mask per image, same name)"
            )
    images = sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FedclError(
            f"data folder {str(images_dir)!r} has no images ({', '.join(IMAGE_SUFFIXES)})"
        )
    sites = _read_split(Path(split_file)) if split_file else {}
    slides = []
    for image in images:
        relative = image.relative_to(images_dir)
        mask = masks_dir / relative.with_suffix(".png")
        if not mask.exists():
            raise FedclError(f"image {str(image)!r} has no mask: expected {str(mask)!r}")
        site = _site_of(spec.kind, relative, sites, split_file) if by_site else "server"
        slides.append(Slide(image, mask, site))
    return slides


def _unlabeled(root: Path) -> list[Slide]:
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise FedclError(f"data folder {str(root)!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return [Slide(image, None, "server") for image in images]


_SEMICOL_CENTRE = re.compile(r"^(.+?)_case", re.IGNORECASE)


def _semicol_release(root: Path, split_file: str, by_site: bool) -> list[Slide]:
    """SemiCOL as released: ``<case>/image/X.png`` and ``<case>/mask/X-labelled.png``."""
    sites = _read_split(Path(split_file)) if split_file else {}
    slides = []
    for image in sorted(root.rglob("image/*.png")):
        case = image.parent.parent
        mask = case / "mask" / f"{image.stem}-labelled.png"
        if not mask.exists():
            raise FedclError(f"image {str(image)!r} has no mask: expected {str(mask)!r}")
        centre = _SEMICOL_CENTRE.match(case.name)
        site = centre.group(1).lower() if centre else case.name
        if split_file:
            site = _site_of("semicol", image.relative_to(root), sites, split_file)
        slides.append(Slide(image, mask, site if by_site else "server"))
    return slides


def _read_split(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise FedclError(f"config key 'data-split': file {str(path)!r} does not exist")
    sites = {}
    with path.open(newline="") as handle:
        for number, row in enumerate(csv.reader(handle), 1):
            if not row or row[0].startswith("#") or row == ["image", "hospital"]:
                continue
            if len(row) != 2:
                raise FedclError(
                    f"{str(path)!r} line {number}: expected 'image,hospital', got {row}"
                )
            sites[row[0].strip()] = row[1].strip()
    return sites


def _site_of(kind: str, relative: Path, sites: dict[str, str], split_file: str) -> str:
    if split_file:
        for key in (str(relative), relative.name):
            if key in sites:
                return sites[key]
        raise FedclError(f"{split_file!r} names no hospital for image {str(relative)!r}")
    if kind == "bcss":
        match = _TCGA_SITE.search(relative.name)
        if match is None:
            raise FedclError(
                f"BCSS image {relative.name!r}: no TCGA tissue-source-site code "
                "(TCGA-XX-...) in its name; give a data-split file instead"
            )
        return match.group(1).upper()
    if len(relative.parts) < 2:
        raise FedclError(
            f"image {str(relative)!r}: {kind} data needs a sub-folder per hospital "
            "(images/<hospital>/...) or a data-split file"
        )
    return relative.parts[0]


def read_pair(slide: Slide, table: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Read one image (``H x W x 3`` uint8) and its mask mapped to classes (``H x W``)."""
    try:
        with Image.open(slide.image) as handle:
            image = np.asarray(handle.convert("RGB"))
        if slide.mask is None:  # unlabeled: every tile kept (tile() drops ignored ones)
            return image, np.zeros(image.shape[:2], np.uint8)
        with Image.open(slide.mask) as handle:
            if handle.mode not in ("L", "P", "I", "I;16"):
                raise FedclError(
                    f"mask {str(slide.mask)!r} has mode {handle.mode}: expected a "
                    "single-channel PNG of label codes"
                )
            codes = np.asarray(handle).astype(np.int64)
    except (OSError, UnidentifiedImageError, SyntaxError) as err:
        broken = slide.mask if "mask" in str(err) else slide.image
        raise FedclError(f"cannot read {str(broken)!r} (unreadable or truncated): {err}") from None
    if codes.shape != image.shape[:2]:
        raise _size_mismatch(slide, codes.shape[::-1], image.shape[1::-1])
    unknown = sorted(set(np.unique(codes).tolist()) - set(table))
    if unknown:
        raise FedclError(
            f"mask {str(slide.mask)!r} has label {unknown[0]} outside the label map "
            f"(known: {sorted(table)})"
        )
    lookup = np.full(max(table) + 1, IGNORE, dtype=np.uint8)
    for code, cls in table.items():
        lookup[code] = cls
    return image, lookup[codes]


def tile(image: np.ndarray, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut non-overlapping ``size`` tiles; drop the ragged edge and half-ignored tiles."""
    rows, cols = image.shape[0] // size, image.shape[1] // size
    images, masks = [], []
    for r in range(rows):
        for c in range(cols):
            window = np.s_[r * size : (r + 1) * size, c * size : (c + 1) * size]
            m = mask[window]
            if np.mean(m == IGNORE) <= 0.5:
                images.append(image[window])
                masks.append(m)
    if not images:
        return np.zeros((0, size, size, 3), np.uint8), np.zeros((0, size, size), np.uint8)
    return np.stack(images), np.stack(masks)


def check_layout(config: RunConfig) -> None:
    """Check the real data's folders, files and sites without reading an image.

    Answers a wrong path, a missing mask or too few sites in a fraction of a second,
    before anything heavy loads; reading the images is :func:`fedcl.scenarios.check_data`.
    """
    for text, split, by_site in (
        (config.data, config.data_split, True),
        (config.server_data, "", False),
    ):
        spec = parse_data(text)
        if spec.kind != "synthetic":
            slides = index_slides(spec, split, by_site=by_site)
            if by_site:
                hospital_slides(slides, config.clients)
            for slide in slides:
                _check_size(slide)


def _check_size(slide: Slide) -> None:
    """Check that a mask is the size of its image, from the files' headers alone."""
    if slide.mask is None:
        return
    try:
        with Image.open(slide.image) as image, Image.open(slide.mask) as mask:
            image_size, mask_size = image.size, mask.size
    except (OSError, UnidentifiedImageError, SyntaxError):
        return  # unreadable: read_pair names the file and the reason
    if mask_size != image_size:
        raise _size_mismatch(slide, mask_size, image_size)


def _size_mismatch(slide: Slide, mask: tuple[int, int], image: tuple[int, int]) -> FedclError:
    return FedclError(
        f"mask {str(slide.mask)!r} is {mask[0]}x{mask[1]} pixels but its image is "
        f"{image[0]}x{image[1]}: they must be the same size"
    )


def hospital_slides(slides: list[Slide], clients: int) -> list[list[Slide]]:
    """Deal the sorted sites to ``clients`` hospitals in turn; every hospital gets one."""
    sites = sorted({s.site for s in slides})
    if len(sites) < clients:
        raise FedclError(
            f"the data has {len(sites)} hospital site(s) ({', '.join(sites)}) but "
            f"clients = {clients}: use at most {len(sites)} clients or a data-split file"
        )
    owner = {site: i % clients for i, site in enumerate(sites)}
    return [[s for s in slides if owner[s.site] == h] for h in range(clients)]


def hospital_tiles(
    slides: list[Slide], table: dict[int, int], size: int, seed: np.random.SeedSequence
) -> tuple[np.ndarray, np.ndarray]:
    """All tiles of one hospital's slides, in a seeded random order."""
    parts = [tile(*read_pair(s, table), size) for s in slides]
    images = np.concatenate([p[0] for p in parts])
    masks = np.concatenate([p[1] for p in parts])
    if len(images) == 0:
        names = ", ".join(s.image.name for s in slides[:3])
        raise FedclError(
            f"no usable {size}x{size} tile in {names}{'...' if len(slides) > 3 else ''}: "
            "images smaller than image-size, or masks mostly ignored"
        )
    order = np.random.default_rng(seed).permutation(len(images))
    return images[order], masks[order]
