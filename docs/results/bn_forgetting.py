"""How much of the forgetting is in the BatchNorm statistics (offline, no new runs).

For every finished forgetting run under a root (``fedcl compare --out``), the final global
model (``checkpoint.pt``) is evaluated on every stage's clean test tiles twice: with the
statistics it ends with (as the run evaluated it: the last stage's), and with each
hospital's statistics recomputed on its own clean training tiles of the stage being
tested (the weights untouched; what a hospital could do with unlabeled tiles of an old
protocol). Usage::

    python docs/results/bn_forgetting.py RUNS_ROOT   # e.g. runs/paper
"""

import copy
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

from fedcl.config import RunConfig
from fedcl.data.synthetic import NUM_CLASSES
from fedcl.models import build_model
from fedcl.recorder import read_checkpoint
from fedcl.scenarios import STAGED, held_out_dataset, hospital_dataset
from fedcl.training import evaluate, recompute_batchnorm


def final_row(run: Path) -> tuple[list[float], list[float]]:
    """Per stage: mean Dice over hospitals (as run, with the stage's own statistics)."""
    config = RunConfig.from_toml(run / "config.toml")
    model = build_model(config.model, NUM_CLASSES)
    model.load_state_dict(read_checkpoint(run)["model"])
    as_run, own = [], []
    for stage in range(config.stages):
        plain, renormed = [], []
        for hospital in range(config.clients):
            test = held_out_dataset(config, hospital, stage)
            plain.append(evaluate(model, test).dice)
            local = copy.deepcopy(model)
            tiles = hospital_dataset(config, hospital, "train", stage=stage)
            recompute_batchnorm(local, tiles, config.batch_size)
            renormed.append(evaluate(local, test).dice)
        as_run.append(statistics.fmean(plain))
        own.append(statistics.fmean(renormed))
    return as_run, own


def main(root: Path) -> None:
    """Print one Markdown row per run, then the mean per entry."""
    print("| run | per stage, as run | per stage, own statistics | ACC as run | ACC own |")
    print("|---|---|---|---|---|")
    means: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for config_file in sorted(root.glob("*/*/config.toml")):
        run = config_file.parent
        config = RunConfig.from_toml(config_file)
        if config.scenario not in STAGED or not (run / "summary.json").exists():
            continue
        as_run, own = final_row(run)
        acc, acc_own = statistics.fmean(as_run), statistics.fmean(own)
        means[f"{config.scenario} {run.name.rsplit('-s', 1)[0]}"].append((acc, acc_own))
        print(
            f"| {config.scenario} {run.name} | {_row(as_run)} | {_row(own)} | "
            f"{acc:.3f} | {acc_own:.3f} |",
            flush=True,
        )
    print("\n| entry | runs | ACC as run | ACC own statistics |\n|---|---|---|---|")
    for entry, pairs in means.items():
        plain, own_ = zip(*pairs, strict=True)
        print(
            f"| {entry} | {len(pairs)} | {statistics.fmean(plain):.3f} | "
            f"{statistics.fmean(own_):.3f} |"
        )


def _row(values: list[float]) -> str:
    return " / ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(Path(sys.argv[1]))
