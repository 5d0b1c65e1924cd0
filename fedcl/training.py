"""Local training and evaluation of a segmentation network (no Flower here).

Loss: MONAI ``DiceCELoss`` (soft Dice + cross-entropy on softmax outputs).
Metric: MONAI ``DiceMetric``'s definition, foreground classes only, averaged per class
over the tiles that contain the class (``ignore_empty=True``: a class absent from a
tile's ground truth does not count for that tile), then averaged over classes; counted
for every tile and class at once (:func:`tile_dice`) and reduced by MONAI.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from monai.losses import DiceCELoss, MaskedDiceLoss
from monai.metrics.utils import do_metric_reduction
from torch import nn

from fedcl.config import BN_STATS
from fedcl.data.dataset import TileDataset
from fedcl.data.real import IGNORE
from fedcl.errors import FedclError

# An extra term of the local loss, from a batch's images (B x 3 x H x W) and the model's
# logits (B x C x H x W): e.g. fedcl.distillation.Distillation.
Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Batches whose loss, before they have moved the model much, says how new the data is
# (TrainResult.first_loss): one is a noisy few tiles, a whole epoch is mostly learning.
FIRST_STEPS = 3


@dataclass(frozen=True)
class TrainResult:
    """What one hospital's local training produced."""

    loss: float  # mean training loss over the steps taken
    num_examples: int  # tiles in the local training set: FedAvg's weight
    steps: int
    # The received model's loss on the first FIRST_STEPS batches (the criterion it
    # trains with, without the strategy's terms): how new the hospital's tiles are to it.
    first_loss: float = math.nan


@dataclass(frozen=True)
class EvalResult:
    """Mean foreground Dice (and its per-class parts) of a model on a dataset."""

    dice: float
    per_class: tuple[float, ...]  # classes 1..C-1; NaN where no tile has the class
    loss: float


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FedclError(
            "config key 'device' is 'cuda' but this machine has no CUDA device "
            f"(torch {torch.__version__}); use 'auto' or 'cpu'"
        )
    if name not in ("cpu", "cuda"):
        raise FedclError(f"config key 'device' must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def device_of(model: nn.Module) -> torch.device:
    """Return the device of the model's parameters (CPU for a parameter-free module)."""
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


class SegmentationLoss(nn.Module):
    """MONAI ``DiceCELoss`` on logits ``B x C x H x W`` and labels ``B x H x W``.

    Pixels labelled :data:`~fedcl.data.real.IGNORE` (real data: outside the annotated
    region) count for neither part: soft Dice via MONAI's ``MaskedDiceLoss``, plus
    cross-entropy with ``ignore_index``; batches without such pixels use ``DiceCELoss``
    itself (the same value).
    """

    def __init__(self) -> None:
        super().__init__()
        self.dice_ce = DiceCELoss(to_onehot_y=True, softmax=True)
        self.masked_dice = MaskedDiceLoss(to_onehot_y=True, softmax=True)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the mean loss of ``logits`` against integer ``labels``."""
        valid = labels != IGNORE
        if bool(valid.all()):
            return self.dice_ce(logits, labels.unsqueeze(1))
        target = torch.where(valid, labels, torch.zeros_like(labels)).unsqueeze(1)
        dice = self.masked_dice(logits, target, mask=valid.unsqueeze(1))
        ce = nn.functional.cross_entropy(logits, labels.long(), ignore_index=IGNORE)
        return dice + ce


def segmentation_loss() -> nn.Module:
    """Return the training loss (:class:`SegmentationLoss`)."""
    return SegmentationLoss()


def make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """Build ``adam`` or ``sgd`` (momentum 0.9) over ``params``."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    raise ValueError(f"unknown optimizer {name!r}; known: adam, sgd")


def train_local(
    model: nn.Module,
    data: TileDataset,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "adam",
    seed: int = 0,
    bn_stats: str = "recomputed",
    penalties: Sequence[Penalty] = (),
    criterion: nn.Module | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``data`` for ``epochs`` passes.

    Parameters
    ----------
    model : nn.Module
        The network, initialised with the global weights, on the device to train on
        (batches follow it).
    data : TileDataset
        The hospital's training tiles.
    epochs : int
        Passes over ``data``.
    batch_size : int
        Tiles per step.
    lr : float
        Learning rate.
    optimizer : str
        ``adam`` or ``sgd`` (momentum 0.9); it starts fresh every call.
    seed : int
        Seeds the batch order, so a round is reproducible.
    bn_stats : str
        ``recomputed`` (the run default, key ``bn-stats``): after training,
        :func:`recompute_batchnorm` on ``data``, so the statistics describe the weights
        they are sent with. ``running``: BatchNorm keeps PyTorch's running averages from
        training, which mix every batch's weights with the statistics the model came with.
    penalties : sequence of Penalty
        Extra loss terms, each called with a batch's images and the model's logits,
        added in order (a strategy's hospital half gives them: FedProx's proximal
        term, LwF's :class:`~fedcl.distillation.Distillation`).
    criterion : nn.Module, optional
        The segmentation loss ``criterion(logits, labels)``; default
        :func:`segmentation_loss` (a hospital half may give another: MiB's unbiased one).
    """
    if bn_stats not in BN_STATS:
        raise ValueError(f"unknown bn_stats {bn_stats!r}; known: {', '.join(BN_STATS)}")
    model.train()
    device = device_of(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(optimizer, params, lr)
    loss_fn = criterion if criterion is not None else segmentation_loss()
    generator = torch.Generator().manual_seed(seed)
    total, steps, first = 0.0, 0, []
    for _ in range(epochs):
        for images, masks in data.batches(batch_size, generator):
            images, masks = images.to(device), masks.to(device)
            opt.zero_grad(set_to_none=True)
            logits = model(images)
            loss = loss_fn(logits, masks)
            if steps < FIRST_STEPS:
                first.append(float(loss.detach()))
            for penalty in penalties:
                loss = loss + penalty(images, logits)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
    if bn_stats == "recomputed":
        recompute_batchnorm(model, data, batch_size)
    return TrainResult(
        loss=total / max(steps, 1),
        num_examples=len(data),
        steps=steps,
        first_loss=sum(first) / len(first) if first else math.nan,
    )


@torch.no_grad()
def recompute_batchnorm(model: nn.Module, data: TileDataset, batch_size: int) -> None:
    """Set every BatchNorm's running statistics to the model's own on ``data``.

    One forward pass in train mode with the statistics reset and ``momentum=None`` (a
    cumulative average over the batches), weights untouched: the statistics then belong
    to these weights, not to a mix of the weights seen during training ("precise BN").
    A model without BatchNorm is left as it is.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    device = device_of(model)
    for images, _ in data.batches(batch_size):
        model(images.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


def tile_dice(predicted: torch.Tensor, masks: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Return the Dice of every foreground class on every tile.

    MONAI's ``DiceMetric(include_background=False, ignore_empty=True,
    ignore_index=IGNORE)`` gives the same values bit for bit (tested), one tile and one
    class at a time in Python; this counts them in one pass (cost: docs/BENCHMARKS.md).

    Parameters
    ----------
    predicted : torch.Tensor
        ``B x H x W`` class indices, the model's.
    masks : torch.Tensor
        ``B x H x W`` class indices, the truth; pixels labelled
        :data:`~fedcl.data.real.IGNORE` count for nothing.
    num_classes : int
        Classes of the masks, background included.

    Returns
    -------
    torch.Tensor
        ``B x (num_classes - 1)``, float32; NaN where the tile's mask has no pixel of
        the class.
    """
    if predicted.shape != masks.shape:
        raise ValueError(
            f"predicted and masks must have one shape (B x H x W), got "
            f"{tuple(predicted.shape)} and {tuple(masks.shape)}"
        )
    classes = torch.arange(1, num_classes, device=masks.device).view(1, -1, 1, 1)
    truth = masks.unsqueeze(1) == classes
    guess = (predicted.unsqueeze(1) == classes) & (masks != IGNORE).unsqueeze(1)
    labelled = truth.sum((2, 3))
    # counts below 2**24 are exact in float32, so 2 * overlap / (labelled + guessed)
    # rounds once, as MONAI's per-tile sums do
    dice = (2.0 * (truth & guess).sum((2, 3))) / (labelled + guess.sum((2, 3)))
    return torch.where(labelled > 0, dice, torch.nan)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: TileDataset, *, batch_size: int = 64, with_loss: bool = True
) -> EvalResult:
    """Return the mean foreground Dice and mean loss of ``model`` on ``data``.

    ``with_loss=False``: the loss is not computed (NaN), for a reading that reports
    Dice only.
    """
    model.eval()
    device = device_of(model)
    loss_fn = segmentation_loss()
    total, batches = 0.0, 0
    scores = []
    for images, masks in data.batches(batch_size):
        images, masks = images.to(device), masks.to(device)
        logits = model(images)
        if with_loss:
            total += float(loss_fn(logits, masks))
        batches += 1
        scores.append(tile_dice(logits.argmax(1), masks, data.num_classes))
    values, counts = do_metric_reduction(torch.cat(scores), "mean_batch")
    # MONAI reports 0 for a class no tile contains; that class has no Dice at all.
    per_class = torch.where(counts > 0, values, torch.nan).cpu()
    present = per_class[~per_class.isnan()]
    dice = float(present.mean()) if len(present) else float("nan")
    return EvalResult(
        dice=dice,
        per_class=tuple(float(v) for v in per_class),
        loss=total / max(batches, 1) if with_loss else float("nan"),
    )
