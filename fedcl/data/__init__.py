"""Tile data: the synthetic H&E generator, the stain model and the dataset contract."""

from fedcl.data.dataset import TileDataset
from fedcl.data.reference import reference_images, root_dataset
from fedcl.data.stain import Stain, perturb
from fedcl.data.synthetic import CLASS_NAMES, NUM_CLASSES, generate_tiles

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "Stain",
    "TileDataset",
    "generate_tiles",
    "perturb",
    "reference_images",
    "root_dataset",
]
