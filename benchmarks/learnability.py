"""Is the synthetic histology learnable, and does morphology matter? (docs/design.md, section 1)

Trains the default U-Net and a per-pixel colour-only classifier (an MLP of 1x1
convolutions on RGB) centrally, the same way, on clean synthetic tiles, and reports the
mean foreground Dice of each on held-out tiles. Targets: U-Net >= 0.75, colour-only at
least 0.25 below it.

    python benchmarks/learnability.py            # 1,000 tiles, 12 epochs, ~1 min
    python benchmarks/learnability.py --smoke    # seconds
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from fedcl.data import NUM_CLASSES, Stain, TileDataset, generate_tiles
from fedcl.models import build_model
from fedcl.training import evaluate, train_local


def colour_only(num_classes: int) -> nn.Module:
    """Classify each pixel from its own RGB value: no spatial context at all."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 1),
        nn.ReLU(),
        nn.Conv2d(32, num_classes, 1),
    )


# Mask colours: background white, tumor red, stroma pink, inflammatory blue, necrosis olive.
PALETTE = np.array(
    [[255, 255, 255], [200, 0, 0], [255, 150, 200], [0, 0, 200], [120, 120, 0]], np.uint8
)


def save_tiles(data: TileDataset, path: str, count: int = 8) -> None:
    """Save ``count`` tiles (top row) above their masks (bottom row), 3x enlarged."""
    from PIL import Image

    top = np.concatenate(list(data.images[:count]), axis=1)
    bottom = np.concatenate(list(PALETTE[data.masks[:count]]), axis=1)
    grid = np.concatenate([top, bottom], axis=0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=1000)
    parser.add_argument("--test-tiles", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, seconds")
    parser.add_argument("--save-tiles", metavar="PNG", help="also save 8 tiles and masks")
    args = parser.parse_args()
    if args.smoke:
        args.tiles, args.test_tiles, args.epochs, args.image_size = 64, 16, 1, 32

    def tiles(count: int, stream: int) -> TileDataset:
        images, masks = generate_tiles(
            count,
            size=args.image_size,
            stain=Stain(),
            seed=np.random.SeedSequence(args.seed, spawn_key=(99, stream)),
        )
        return TileDataset(images, masks, NUM_CLASSES)

    train, test = tiles(args.tiles, 0), tiles(args.test_tiles, 1)
    if args.save_tiles:
        save_tiles(train, args.save_tiles)
    results = {}
    for name, factory in (
        ("unet", lambda: build_model("unet", NUM_CLASSES)),
        ("colour", lambda: colour_only(NUM_CLASSES)),
    ):
        torch.manual_seed(args.seed)
        model = factory()
        start = time.perf_counter()
        for epoch in range(args.epochs):
            train_local(
                model, train, epochs=1, batch_size=16, lr=2e-3, seed=epoch, bn_stats="running"
            )
        seconds = time.perf_counter() - start
        result = evaluate(model, test)
        results[name] = result.dice
        per_class = " ".join(f"{d:.3f}" for d in result.per_class)
        print(
            f"{name:7s} Dice {result.dice:.3f} (per class 1-4: {per_class}) "
            f"trained {seconds:.1f} s, {args.tiles * args.epochs / seconds:.0f} tiles/s"
        )
    gap = results["unet"] - results["colour"]
    print(
        f"RESULT unet_dice={results['unet']:.3f} colour_dice={results['colour']:.3f} "
        f"gap={gap:.3f} tiles={args.tiles} epochs={args.epochs} size={args.image_size}"
    )


if __name__ == "__main__":
    main()
