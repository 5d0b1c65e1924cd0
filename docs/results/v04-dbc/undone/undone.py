"""Old stages' Dice right after a server-side consolidation step, and after the next local epoch.

Measures whether the hospitals' next local epoch undoes what a consolidation step at the
server gives back to the old stage (the version-0.3 explanation of why DBC's server-side
temporal side kept nothing). Descriptive only: no constant is chosen on it. In process,
no Flower: the tissue shift on a tuning seed with fedcl's default workload; FedAvg
(weighted by tiles) over the hospitals' local epochs (``fedcl.training.train_local``,
the seeds a run uses). The teacher is the global model of stage 0's last round; in the
first ``--shift-rounds`` rounds of stage 1 the aggregate ``A`` is pulled toward the
teacher's outputs on the server's public reference set (``fedcl.continuity.consolidate``,
``--steps`` Adam steps, monotone), giving ``C``, which the hospitals receive. Each of them
trains one local round from ``C`` and, for comparison, from ``A`` (same tiles and seed).
Dice is each hospital's on its held-out tiles with its own statistics (re-estimated on
its current training tiles), the mean over hospitals:

    cd docs/results/v04-dbc/undone && python undone.py --seeds 0,1,2 > undone.txt

Columns, per stage-1 round with a step: stage 0's Dice of A, of C, of the hospitals'
models trained from A and from C; "kept" is (trained from C - trained from A) over
(C - A): the share of the step's gain on the old stage that survives one local epoch
(nan where the step moved the old stage by less than 0.01). Then the same for the newest
stage (stage 1). Last, the differences' means over the stepped rounds with a 95 %
interval (descriptive: the rounds of one seed follow each other).
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from torch import nn

from fedcl.config import RunConfig
from fedcl.continuity import consolidate, pixel_index, reference_outputs
from fedcl.data import NUM_CLASSES, reference_images
from fedcl.data.dataset import TileDataset, images_to_tensor
from fedcl.evaluation import evaluate_hospital, own_tiles_round
from fedcl.hospital import round_seed
from fedcl.models import build_model
from fedcl.scenarios import scenario_of
from fedcl.strategies.dbc import DBCSettings
from fedcl.study import TUNING_SEEDS, paired
from fedcl.training import train_local

DBC = DBCSettings()  # P, the pixels per reference tile, and the step's lr: DBC's defaults
NOISE = 0.01  # a step that moves the old stage less than this has no share to keep


def fedavg(models: list[nn.Module], weights: list[int]) -> dict[str, torch.Tensor]:
    """Return the tile-weighted mean of the models' state (integer buffers from the first)."""
    states = [m.state_dict() for m in models]
    total = sum(weights)
    return {
        key: (
            sum(s[key] * (w / total) for s, w in zip(states, weights, strict=True))
            if states[0][key].is_floating_point()
            else states[0][key]
        )
        for key in states[0]
    }


def trained(
    config: RunConfig, start: nn.Module, data: TileDataset, hospital: int, r: int
) -> tuple[nn.Module, int]:
    """Return a copy of ``start`` after the hospital's local round ``r``, and its tile count."""
    model = copy.deepcopy(start)
    result = train_local(
        model, data, **config.local_schedule(), seed=round_seed(config.seed, hospital, r)
    )
    return model, result.num_examples


def old_and_new(config: RunConfig, models: list[nn.Module], r: int) -> tuple[float, float]:
    """Mean over hospitals of stage 0's and stage 1's Dice (own statistics) after round ``r``.

    ``models``: one per hospital (its own local model), or one model for all.
    """
    scenario = scenario_of(config)
    per_stage: list[list[float]] = [[], []]
    for hospital in range(config.clients):
        model = models[hospital if len(models) > 1 else 0]
        test = {stage: scenario.test_dataset(hospital, stage) for stage in (0, 1)}
        own = scenario.train_dataset(hospital, own_tiles_round(r))
        figures = evaluate_hospital(model, test, own, batch_size=config.batch_size)
        for stage in (0, 1):
            per_stage[stage].append(figures.dice_own_stats[figures.stages.index(stage)])
    return statistics.fmean(per_stage[0]), statistics.fmean(per_stage[1])


def run(seed: int, steps: int, lr: float, shift_rounds: int) -> list[tuple[float, ...]]:
    """Print one seed's table; return its rows' (C - A, from C - from A) on stage 0 and 1."""
    config = RunConfig(scenario="catastrophic-forgetting", seed=seed)
    scenario = scenario_of(config)
    first = next(r for r in range(1, config.rounds + 1) if scenario.stage_of(r) == 1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(config.model, NUM_CLASSES)
    teacher, before = None, model  # before: the last aggregate, before its step
    rows: list[tuple[float, ...]] = []
    print(f"seed {seed}: stage 1 starts in round {first}; {steps} step(s) a round, lr {lr}")
    print("round | stage 0: A  C  from A  from C  kept | stage 1: A  C  from A  from C")
    for r in range(1, first + shift_rounds + 1):
        data = [scenario.train_dataset(h, r) for h in range(config.clients)]
        replies = [trained(config, model, data[h], h, r) for h in range(config.clients)]
        if r > first:  # the round before took a step: trained from C (above) and from A
            from_c = [m for m, _ in replies]
            from_a = [trained(config, before, data[h], h, r)[0] for h in range(config.clients)]
            a_old, a_new = old_and_new(config, [before], r - 1)
            c_old, c_new = old_and_new(config, [model], r - 1)
            fa_old, fa_new = old_and_new(config, from_a, r)
            fc_old, fc_new = old_and_new(config, from_c, r)
            gain = c_old - a_old
            kept = (fc_old - fa_old) / gain if abs(gain) >= NOISE else float("nan")
            print(
                f"{r - 1} | {a_old:.3f} {c_old:.3f} {fa_old:.3f} {fc_old:.3f} {kept:+.2f} | "
                f"{a_new:.3f} {c_new:.3f} {fa_new:.3f} {fc_new:.3f}",
                flush=True,
            )
            rows.append((c_old - a_old, fc_old - fa_old, c_new - a_new, fc_new - fa_new))
            if r == first + shift_rounds:
                return rows
        model.load_state_dict(fedavg([m for m, _ in replies], [n for _, n in replies]))
        images = images_to_tensor(reference_images(config, r))
        if r == first - 1:  # the last calm round's model is the teacher
            teacher = copy.deepcopy(model)
        if r >= first:
            assert teacher is not None
            before = copy.deepcopy(model)
            m, _, h, w = images.shape
            index = pixel_index(m, h, w, DBC.pixels_per_image, seed)
            target = reference_outputs(teacher, images, DBC.pixels_per_image, seed)
            consolidate(model, images, index, target, steps=steps, lr=lr, monotone=True)


def main() -> None:
    """Print the table for each seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(map(str, TUNING_SEEDS)))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lr", type=float, default=DBC.lr)
    parser.add_argument("--shift-rounds", type=int, default=3)
    args = parser.parse_args()
    per_stage = RunConfig(scenario="catastrophic-forgetting").rounds_per_stage
    if not 1 <= args.shift_rounds < per_stage:
        parser.error(
            f"--shift-rounds must be 1 to {per_stage - 1} (stage 1's rounds, one to train after)"
        )
    rows = [
        row
        for seed in (int(s) for s in args.seeds.split(","))
        for row in run(seed, args.steps, args.lr, args.shift_rounds)
    ]
    old, old_after, new, new_after = (
        paired(dict(enumerate(column)), dict.fromkeys(range(len(rows)), 0.0))
        for column in zip(*rows, strict=True)
    )
    # the rounds of one seed follow each other: the interval is descriptive, not a test
    print(
        f"mean of {len(rows)} stepped rounds (95 % interval over them): the step moves "
        f"stage 0 by {old.cell()} and stage 1 by {new.cell()}; after one local epoch, "
        f"trained from C - trained from A: stage 0 {old_after.cell()}, "
        f"stage 1 {new_after.cell()}"
    )


if __name__ == "__main__":
    main()
