"""Tile data: the synthetic H&E generator, the stain model and the dataset contract.

The names below load their module on first use, so that reading a config (which
checks ``data`` with :mod:`fedcl.data.real`) does not import torch: ``fedcl run``
starts Ray before it pays for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fedcl.data.dataset import TileDataset
    from fedcl.data.reference import apart_images, reference_images, root_dataset
    from fedcl.data.stain import Stain, perturb
    from fedcl.data.synthetic import CLASS_NAMES, NUM_CLASSES, generate_tiles

_MODULES = {
    "TileDataset": "dataset",
    "apart_images": "reference",
    "reference_images": "reference",
    "root_dataset": "reference",
    "Stain": "stain",
    "perturb": "stain",
    "CLASS_NAMES": "synthetic",
    "NUM_CLASSES": "synthetic",
    "generate_tiles": "synthetic",
}

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "Stain",
    "TileDataset",
    "apart_images",
    "generate_tiles",
    "perturb",
    "reference_images",
    "root_dataset",
]


def __getattr__(name: str) -> Any:
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
