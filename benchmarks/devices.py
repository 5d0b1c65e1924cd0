"""One hospital's local epoch on each device this machine has (CPU, and CUDA if present).

The default workload (200 tiles of 64 px, batch 16, Adam), the same ``train_local``
that a simulated hospital runs, timed after one warm-up epoch; best of 3. It says what
``device = "auto"`` buys on a machine with a GPU. Needs no Flower or Ray.

    python benchmarks/devices.py                     # default U-Net and smp-resnet34
    python benchmarks/devices.py --smoke
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch
from common import result

from fedcl.config import RunConfig
from fedcl.data import NUM_CLASSES, Stain, TileDataset, generate_tiles
from fedcl.models import build_model
from fedcl.training import train_local


def epoch_seconds(model_name: str, data: TileDataset, config: RunConfig, device: str) -> float:
    """Best of 3 local epochs of ``model_name`` on ``device``, after a warm-up epoch."""
    torch.manual_seed(0)
    model = build_model(model_name, NUM_CLASSES).to(device)
    times = []
    for repeat in range(4):  # the first is the warm-up (allocator, cuDNN autotuning)
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        train_local(model, data, **config.local_schedule(), seed=repeat)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    config = RunConfig()
    models = ["unet", "smp-resnet34"]
    if args.smoke:
        config, models = RunConfig(image_size=32, train_tiles=16, batch_size=8), ["unet"]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    print(
        f"{platform.machine()} {os.cpu_count()} cores ({torch.get_num_threads()} torch "
        f"threads), {gpu}, torch {torch.__version__}"
    )
    images, masks = generate_tiles(
        config.train_tiles, size=config.image_size, stain=Stain(), seed=np.random.SeedSequence(0)
    )
    data = TileDataset(images, masks, NUM_CLASSES)
    figures: dict[str, float] = {}
    for name in models:
        for device in devices:
            seconds = epoch_seconds(name, data, config, device)
            figures[f"{name}_{device}_tiles_per_s"] = len(data) / seconds
        if "cuda" in devices:
            figures[f"{name}_cuda_speedup"] = (
                figures[f"{name}_cuda_tiles_per_s"] / figures[f"{name}_cpu_tiles_per_s"]
            )
    result(**figures)


if __name__ == "__main__":
    main()
