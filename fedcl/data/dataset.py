"""The tile-dataset contract shared by synthetic and (later) on-disk data."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """``N x H x W x 3`` uint8 RGB -> ``N x 3 x H x W`` float32 in 0..1."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255)


class TileDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """RGB tiles and their class masks, held in memory.

    Parameters
    ----------
    images : np.ndarray
        ``N x H x W x 3`` uint8 RGB tiles.
    masks : np.ndarray
        ``N x H x W`` integer class indices in ``0..num_classes-1`` (or
        ``ignore_index`` for pixels that carry no label).
    num_classes : int
        Number of classes, background included.

    Notes
    -----
    ``dataset[i]`` gives ``(image, mask)``: a ``3 x H x W`` float32 tensor in 0..1
    and an ``H x W`` int64 tensor. :meth:`batches` yields whole ``B x ...``
    batches without per-sample overhead, which is what the training loop uses.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, num_classes: int) -> None:
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"images must be N x H x W x 3 uint8, got {images.shape} {images.dtype}"
            )
        if masks.shape != images.shape[:3]:
            raise ValueError(f"masks must be N x H x W = {images.shape[:3]}, got {masks.shape}")
        self.images = images
        self.masks = masks
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1).float() / 255
        return image, torch.from_numpy(self.masks[index].astype(np.int64))

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(B x 3 x H x W float, B x H x W int64)`` batches.

        Shuffled with ``generator`` when one is given, in order otherwise.
        """
        n = len(self)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        for start in range(0, n, batch_size):
            index = (
                order[start : start + batch_size].numpy()
                if order is not None
                else slice(start, start + batch_size)
            )
            masks = torch.from_numpy(self.masks[index].astype(np.int64))
            yield images_to_tensor(self.images[index]), masks
