"""Learning without forgetting (LwF) for segmentation: distil toward the previous stage's model.

Li and Hoiem, "Learning without Forgetting", TPAMI 2018, applied per pixel as in the
continual-segmentation literature (Michieli and Zanuttigh, ICCV-W 2019; Cermelli et
al., "Modeling the Background for Incremental Learning in Semantic Segmentation", CVPR
2020, use it as their baseline). While a hospital learns a new stage, the model it
received at the start of that stage (the *teacher*) labels the same tiles softly, and
the loss keeps the new model's softened outputs close to the teacher's. It needs no
data of an old stage: only the current tiles and one frozen model.

The federated form (``lwf`` strategy) is FedAvg whose hospitals train this way; the
teacher of stage ``s`` is the first global model a hospital receives in stage ``s``.
DBC's temporal side (``dbc`` strategy) uses the same penalty with a teacher its server
chose, and may also distil on the public reference tiles (:class:`PublicDistillation`)
and measure the difference as Barlow continuity instead of KL (:data:`TERMS`).

Under the class shift a new stage's masks call the old classes background, and the
old model calls the new classes background. KL then holds the student to "background"
where the new labels say otherwise. The ``mib`` term is MiB's unbiased distillation
(Cermelli et al., CVPR 2020): the classes the hospital's current masks annotate and
the teacher was not trained on are folded into background in both models'
distributions before they are compared, so the term keeps the old classes and leaves
the new ones to the labels; where no class is new it is the KL term. MiB's other half,
:class:`UnbiasedLoss` (a strategy's ``unbiased-loss`` key), does the same for the
labels: a pixel the current masks call background may be an old class, so the
segmentation loss reads background as "background or any class not annotated now".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from fedcl.data import NUM_CLASSES
from fedcl.data.real import IGNORE
from fedcl.training import segmentation_loss

# How a student's outputs are held to a teacher's: "kl", the softened KL divergence
# (LwF); "barlow", DBC's Barlow continuity between their class probabilities per pixel;
# "mib", KL with the newly annotated classes folded into background.
TERMS = ("kl", "barlow", "mib")


def annotated_classes(masks: np.ndarray) -> tuple[int, ...]:
    """Return the foreground classes ``masks`` label (background and ``IGNORE`` left out)."""
    return tuple(int(c) for c in np.unique(masks) if c not in (0, IGNORE))


def class_bits(classes: Iterable[int]) -> int:
    """Return a set of classes as one integer (bit ``c`` set for class ``c``): a message value."""
    return sum(1 << c for c in set(classes))


def bits_classes(bits: int) -> tuple[int, ...]:
    """Return the foreground classes of :func:`class_bits`' integer, in order."""
    return tuple(c for c in range(1, NUM_CLASSES) if bits >> c & 1)


def current_classes(
    term: str,
    annotated: Callable[[], Sequence[int]],
    teacher_classes: Sequence[int] | None = None,
) -> tuple[int, ...]:
    """Return the classes the ``mib`` term folds (none for the other terms).

    Those ``annotated()`` (the classes the current masks annotate) that the teacher was
    not trained on: ``teacher_classes`` where the strategy knows them (DBC's server
    does), else every annotated class (a stage's teacher knew none of a new stage's
    classes). Where every class was annotated before, nothing is folded and ``mib`` is
    ``kl`` exactly. ``annotated`` is called only for ``mib``: the other terms need no
    masks.
    """
    if term != "mib":
        return ()
    return tuple(c for c in annotated() if c not in (teacher_classes or ()))


def folded(log_probs: torch.Tensor, into_background: Sequence[int]) -> torch.Tensor:
    """Merge the classes ``into_background`` into class 0 of ``B x C x H x W`` log-probabilities.

    Returns ``B x (C - k) x H x W`` log-probabilities: background (with the merged
    classes: their log-sum-exp) first, then the other classes in order.
    """
    merged = [0, *into_background]
    kept = [c for c in range(1, log_probs.shape[1]) if c not in merged]
    background = torch.logsumexp(log_probs[:, merged], dim=1, keepdim=True)
    return torch.cat([background, log_probs[:, kept]], dim=1)


def distillation_loss(
    student: torch.Tensor, teacher: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean per-pixel KL divergence of the softened teacher from the softened student.

    Parameters
    ----------
    student : torch.Tensor
        The trained model's logits ``B x C x H x W``.
    teacher : torch.Tensor
        The frozen model's logits ``B x C x H x W``; no gradient flows into them.
    temperature : float
        Softens both distributions (``softmax(logits / T)``); the loss is scaled by
        ``T^2`` so its gradients keep their size as ``T`` changes (Hinton et al., 2015).

    Returns
    -------
    torch.Tensor
        A scalar: ``T^2 * mean over pixels of KL(p_teacher || p_student)``.
    """
    return _softened_kl(student, teacher, temperature)


def _softened_kl(
    student: torch.Tensor,
    teacher: torch.Tensor,
    temperature: float,
    into_background: Sequence[int] = (),
) -> torch.Tensor:
    """``T^2`` x the mean per-pixel KL, ``into_background`` folded in both (:func:`folded`)."""
    log_student, log_teacher = (
        folded(nn.functional.log_softmax(x / temperature, dim=1), into_background)
        if into_background
        else nn.functional.log_softmax(x / temperature, dim=1)
        for x in (student, teacher.detach())
    )
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return temperature**2 * kl.mean()


def continuity_term(
    student: torch.Tensor,
    teacher: torch.Tensor,
    *,
    term: str,
    temperature: float,
    new_classes: Sequence[int] = (),
) -> torch.Tensor:
    """How far the student's logits are from the teacher's, ``B x C x H x W`` each.

    ``kl``: :func:`distillation_loss`. ``barlow``: the Barlow continuity loss between
    the two models' class probabilities, every pixel of the batch a row (softened by
    ``temperature`` as KL's are). ``mib``: the KL divergence after ``new_classes``
    (:func:`current_classes`) are folded into background in both (:func:`folded`).
    """
    if term == "kl":
        return distillation_loss(student, teacher, temperature)
    if term == "mib":
        return _softened_kl(student, teacher, temperature, new_classes)
    if term == "barlow":
        # server-side math a kl hospital (LwF's) never needs: imported where it is used
        from fedcl.continuity.behaviour import barlow_continuity_loss

        rows = [
            torch.softmax(x / temperature, dim=1).movedim(1, -1).reshape(-1, x.shape[1])
            for x in (teacher.detach(), student)
        ]
        return barlow_continuity_loss(rows[0], rows[1])
    raise ValueError(f"term must be one of {TERMS}, got {term!r}")


class Distillation:
    """A training penalty: ``weight * distillation_loss(model(x), teacher(x), T)``.

    Parameters
    ----------
    teacher : nn.Module
        The frozen model of the previous stage; it is put in eval mode (its BatchNorm
        statistics are the ones it was sent with) and never trained.
    weight : float
        Weight of the distillation term beside the segmentation loss (LwF's lambda).
    temperature : float
        Softmax temperature of both models' outputs.
    term : str
        ``kl`` (LwF's), ``barlow`` or ``mib`` (:func:`continuity_term`).
    new_classes : sequence of int
        ``mib``: the classes folded into background (:func:`current_classes`).
    """

    def __init__(
        self,
        teacher: nn.Module,
        *,
        weight: float,
        temperature: float,
        term: str = "kl",
        new_classes: Sequence[int] = (),
    ) -> None:
        if weight < 0 or temperature <= 0:
            raise ValueError(
                f"distillation needs weight >= 0 and temperature > 0, got {weight}, {temperature}"
            )
        if term not in TERMS:
            raise ValueError(f"term must be one of {TERMS}, got {term!r}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = weight
        self.temperature = temperature
        self.term = term
        self.new_classes = tuple(new_classes)

    def __call__(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Return the penalty of a batch: ``images`` ``B x 3 x H x W``, the model's ``logits``."""
        with torch.no_grad():
            soft_labels = self.teacher(images)
        return self.weight * self.held(logits, soft_labels)

    def held(self, logits: torch.Tensor, soft_labels: torch.Tensor) -> torch.Tensor:
        """Return the unweighted term between the student's ``logits`` and the teacher's."""
        return continuity_term(
            logits,
            soft_labels,
            term=self.term,
            temperature=self.temperature,
            new_classes=self.new_classes,
        )


class PublicDistillation(Distillation):
    """The same penalty on public tiles: each step, a batch of them through both models.

    The current batch's images and logits are not used: the student (the model being
    trained, in its training mode) sees the next ``batch_size`` tiles of a seeded
    permutation of ``images``, drawn again when it runs out.

    Parameters
    ----------
    student : nn.Module
        The model being trained (the penalty runs it forward once more per step).
    teacher : nn.Module
        The frozen model.
    images : torch.Tensor
        ``M x 3 x H x W`` public tiles in 0..1.
    batch_size : int
        Public tiles per step.
    seed : int
        Seeds the order of the public tiles (and their augmentation).
    augment : bool
        Flip and turn each batch (a random one of the 8 symmetries of a square tile).
    **kwargs
        :class:`Distillation`'s ``weight``, ``temperature``, ``term``, ``new_classes``.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        images: torch.Tensor,
        *,
        batch_size: int,
        seed: int,
        augment: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(teacher, **kwargs)
        self.student = student
        self.images = images
        self.batch_size = max(1, min(batch_size, len(images)))
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.augment = augment

    def __call__(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Return the penalty on the next batch of public tiles (the arguments unused)."""
        if len(self.order) < self.batch_size:
            self.order = torch.randperm(len(self.images), generator=self.generator).tolist()
        batch, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        public = self.images[batch].to(images.device)
        if self.augment:  # a seeded flip and quarter turn of the whole batch
            flip, turns = (
                torch.randint(0, 2, (1,), generator=self.generator),
                torch.randint(0, 4, (1,), generator=self.generator),
            )
            public = torch.rot90(public.flip(-1) if flip else public, int(turns), dims=(-2, -1))
        with torch.no_grad():
            soft_labels = self.teacher(public)
        return self.weight * self.held(self.student(public), soft_labels)


def distil(
    model: nn.Module,
    teacher: nn.Module,
    images: torch.Tensor,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    temperature: float,
    term: str = "kl",
) -> float:
    """Train ``model`` in place toward ``teacher`` on public tiles alone; return the mean loss.

    ``steps`` fresh-Adam steps on augmented batches (:class:`PublicDistillation`), the
    model in training mode (its BatchNorm statistics move with the batches: re-estimate
    them after). The server-side alternative to distilling at the hospitals.
    """
    term_of = PublicDistillation(
        model, teacher, images, batch_size=batch_size, seed=seed, augment=True,
        weight=1.0, temperature=temperature, term=term,
    )  # fmt: skip
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    was_training, total = model.training, 0.0
    model.train()
    unused = torch.empty(0, device=images.device)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        loss = term_of(unused, unused)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    model.train(was_training)
    return total / max(steps, 1)


class UnbiasedLoss(nn.Module):
    """MiB's unbiased segmentation loss: unannotated classes count as background.

    The classes ``1..C-1`` not in ``annotated`` are folded into background in the
    model's distribution (:func:`folded`) and the labels renumbered to match, then
    fedcl's loss (:func:`fedcl.training.segmentation_loss`) is taken on the folded
    distribution: a background pixel predicted as an old class costs nothing.

    Parameters
    ----------
    annotated : sequence of int
        The foreground classes the current masks annotate.
    num_classes : int
        ``C``, background included.
    """

    def __init__(self, annotated: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.unannotated = [c for c in range(1, num_classes) if c not in annotated]
        kept = [0, *(c for c in range(1, num_classes) if c in annotated)]
        index = torch.zeros(max(num_classes, IGNORE + 1), dtype=torch.long)
        index[kept] = torch.arange(len(kept))
        index[IGNORE] = IGNORE
        self.index = index  # old class number -> folded one
        self.base = segmentation_loss()

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Return the loss of ``logits`` ``B x C x H x W`` against integer ``labels``."""
        log_probs = folded(nn.functional.log_softmax(logits, dim=1), self.unannotated)
        return self.base(log_probs, self.index.to(labels.device)[labels.long()])


def unbiased_loss(annotated: Sequence[int]) -> UnbiasedLoss | None:
    """Return MiB's unbiased loss for the ``annotated`` classes of the current masks.

    None (fedcl's own loss, exactly) where they annotate every class: nothing to fold.
    """
    if len(annotated) == NUM_CLASSES - 1:
        return None
    return UnbiasedLoss(annotated, NUM_CLASSES)
