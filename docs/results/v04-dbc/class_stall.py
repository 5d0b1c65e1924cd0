"""Why a new class is learned slowly under DBC's teacher: one hospital, the class shift.

Descriptive (nothing is chosen on it). Hospital 0 of the class shift (seed from the
command line; tuning seeds only) trains 8 epochs on its stage-0 tiles (tumour and
stroma annotated): that model is the teacher. A copy then trains 5 epochs on the
hospital's stage-1 tiles (inflammatory annotated, the rest called background) with
each loss below, and after every epoch prints its Dice on the stage-0 and the stage-1
test tiles (statistics re-estimated on the training tiles, as ``train_local`` does).

    python docs/results/v04-dbc/class_stall.py 2
"""

from __future__ import annotations

import copy
import sys

import torch

from fedcl.configure import load_config
from fedcl.data import NUM_CLASSES
from fedcl.distillation import Distillation, annotated_classes, folded, unbiased_loss
from fedcl.models import build_model
from fedcl.scenarios import scenario_of
from fedcl.training import evaluate, recompute_batchnorm, train_local


class MaskedMiB:
    """DBC's ``mib`` term (weight 1, T = 2), left out where the masks label a new class."""

    def __init__(self, teacher: torch.nn.Module, new: tuple[int, ...]) -> None:
        self.teacher, self.new = teacher, new

    def __call__(self, images: torch.Tensor, logits: torch.Tensor, masks: torch.Tensor):
        """Return the term of a batch; pixels whose mask is a new class count as 0."""
        with torch.no_grad():
            soft = self.teacher(images)
        keep = ~torch.isin(masks, torch.tensor(self.new))
        student, teacher = (
            folded(torch.nn.functional.log_softmax(x / 2, dim=1), self.new) for x in (logits, soft)
        )
        kl = (teacher.exp() * (teacher - student)).sum(dim=1)
        return 4 * (kl * keep).sum() / keep.numel()


def main(seed: int) -> None:
    """Train the teacher, then each variant; print the Dice after every epoch."""
    torch.set_num_threads(1)
    config = load_config(
        {"scenario": "catastrophic-forgetting", "stage-shift": "classes", "seed": seed}
    )
    scenario = scenario_of(config)
    old, now = scenario.train_dataset(0, 1), scenario.train_dataset(0, config.rounds_per_stage + 1)
    tests = [scenario.test_dataset(0, stage) for stage in (0, 1)]
    schedule = {"epochs": 1, "batch_size": config.batch_size, "lr": config.lr}
    torch.manual_seed(0)
    teacher = build_model(config.model, NUM_CLASSES)
    for epoch in range(8):
        train_local(teacher, old, **schedule, seed=epoch)
    annotated = annotated_classes(now.masks)
    new = tuple(c for c in annotated if c not in annotated_classes(old.masks))
    frozen = copy.deepcopy(teacher).eval().requires_grad_(False)
    mib = {"weight": 1.0, "temperature": 2.0, "term": "mib", "new_classes": new}

    def train(name: str, criterion=None, penalties=(), masked=None) -> None:
        student, dice = copy.deepcopy(teacher), []
        for epoch in range(5):
            if masked is None:
                train_local(
                    student, now, **schedule, seed=100 + epoch,
                    penalties=penalties, criterion=criterion,
                )  # fmt: skip
            else:  # train_local's loop, the term given the masks
                student.train()
                optimizer = torch.optim.Adam(student.parameters(), lr=config.lr)
                generator = torch.Generator().manual_seed(100 + epoch)
                for images, masks in now.batches(config.batch_size, generator):
                    optimizer.zero_grad()
                    logits = student(images)
                    (criterion(logits, masks) + masked(images, logits, masks)).backward()
                    optimizer.step()
                recompute_batchnorm(student, now, config.batch_size)
            dice.append(tuple(round(evaluate(student, t).dice, 3) for t in tests))
        print(f"{name:38s}", " ".join(f"{a:.3f}/{b:.3f}" for a, b in dice), flush=True)

    print(f"seed {seed}: new classes {new}; each epoch 'stage 0 / stage 1' Dice")
    train("plain loss (FedAvg's)")
    train("unbiased loss", criterion=unbiased_loss(annotated))
    train(
        "unbiased loss + mib term (DBC)",
        criterion=unbiased_loss(annotated), penalties=[Distillation(frozen, **mib)],
    )  # fmt: skip
    train(
        "the same, term off on new-class pixels",
        criterion=unbiased_loss(annotated), masked=MaskedMiB(frozen, new),
    )  # fmt: skip
    train("mib term alone", penalties=[Distillation(frozen, **mib)])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
