"""How much of the forgetting is in the BatchNorm statistics (offline, no new runs).

For every finished forgetting run under a root (``fedcl compare --out``), the final global
model (``checkpoint.pt``) is evaluated on every stage's clean test tiles with the same
weights and four sets of BatchNorm statistics:

- ``as run``: the statistics it ends with (the last stage's; what the run evaluated);
- ``own``: each hospital's, recomputed on its own clean training tiles of the stage being
  tested (what a hospital could do with unlabeled tiles of an old protocol);
- ``pooled``: one set recomputed on every hospital's training tiles of every stage (the
  best a single set of statistics over time could be);
- ``reference``: recomputed on the server's public reference set (the only tiles the
  server has).

Usage::

    python docs/results/bn_forgetting.py RUNS_ROOT   # e.g. runs/paper
"""

import copy
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fedcl.configure import from_run_dir
from fedcl.data import NUM_CLASSES, TileDataset, reference_images
from fedcl.models import build_model
from fedcl.recorder import read_checkpoint
from fedcl.scenarios import scenario_of
from fedcl.scenarios.tiles import hospital_dataset
from fedcl.training import evaluate, recompute_batchnorm

VARIANTS = ("as run", "own", "pooled", "reference")


def renormed(model: nn.Module, tiles: TileDataset, batch_size: int) -> nn.Module:
    """Return a copy of ``model`` with its BatchNorm statistics recomputed on ``tiles``."""
    copied = copy.deepcopy(model)
    recompute_batchnorm(copied, tiles, batch_size)
    return copied


def final_row(run: Path) -> dict[str, list[float]]:
    """Per variant, per stage: mean Dice over the hospitals of the run's final model."""
    config = from_run_dir(run)
    model = build_model(config.model, NUM_CLASSES)
    model.load_state_dict(read_checkpoint(run)["model"])
    train = {
        (h, s): hospital_dataset(config, h, "train", stage=s)
        for h in range(config.clients)
        for s in range(config.stages)
    }
    every = list(train.values())
    pooled = TileDataset(
        np.concatenate([t.images for t in every]),
        np.concatenate([t.masks for t in every]),
        NUM_CLASSES,
    )
    images = reference_images(config)
    reference = TileDataset(images, np.zeros(images.shape[:3], np.uint8), NUM_CLASSES)
    shared = {
        "as run": model,
        "pooled": renormed(model, pooled, config.batch_size),
        "reference": renormed(model, reference, config.batch_size),
    }
    dice: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for stage in range(config.stages):
        per_hospital: dict[str, list[float]] = defaultdict(list)
        for hospital in range(config.clients):
            test = scenario_of(config).test_dataset(hospital, stage)
            own = renormed(model, train[hospital, stage], config.batch_size)
            for variant, m in {**shared, "own": own}.items():
                per_hospital[variant].append(evaluate(m, test).dice)
        for variant in VARIANTS:
            dice[variant].append(statistics.fmean(per_hospital[variant]))
    return dice


def main(root: Path) -> None:
    """Print one Markdown row per run, then the mean per entry (cells: per stage; ACC)."""
    columns = " | ".join(f"{v}: per stage (ACC)" for v in VARIANTS)
    print(f"| run | {columns} |\n" + "|---" * (len(VARIANTS) + 1) + "|")
    rows: dict[str, list[dict[str, list[float]]]] = defaultdict(list)
    for config_file in sorted(root.glob("*/*/config.toml")):
        run = config_file.parent
        config = from_run_dir(run)
        if not scenario_of(config).staged or not (run / "summary.json").exists():
            continue
        dice = final_row(run)
        rows[f"{config.scenario} {run.name.rsplit('-s', 1)[0]}"].append(dice)
        print(f"| {config.scenario} {run.name} | {_cells(dice)} |", flush=True)
    print(f"\n| entry | runs | {columns} |\n" + "|---" * (len(VARIANTS) + 2) + "|")
    for entry, runs in rows.items():
        mean = {
            v: [statistics.fmean(stage) for stage in zip(*(r[v] for r in runs), strict=True)]
            for v in VARIANTS
        }
        print(f"| {entry} | {len(runs)} | {_cells(mean)} |")


def _cells(dice: dict[str, list[float]]) -> str:
    return " | ".join(
        " / ".join(f"{d:.3f}" for d in dice[v]) + f" ({statistics.fmean(dice[v]):.3f})"
        for v in VARIANTS
    )


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
