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
"""

from __future__ import annotations

import torch
from torch import nn


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
    log_student = nn.functional.log_softmax(student / temperature, dim=1)
    log_teacher = nn.functional.log_softmax(teacher.detach() / temperature, dim=1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(dim=1)
    return temperature**2 * kl.mean()


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
    """

    def __init__(self, teacher: nn.Module, *, weight: float, temperature: float) -> None:
        if weight < 0 or temperature <= 0:
            raise ValueError(
                f"distillation needs weight >= 0 and temperature > 0, got {weight}, {temperature}"
            )
        self.teacher = teacher.eval().requires_grad_(False)
        self.weight = weight
        self.temperature = temperature

    def __call__(self, images: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Return the penalty of a batch: ``images`` ``B x 3 x H x W``, the model's ``logits``."""
        with torch.no_grad():
            soft_labels = self.teacher(images)
        return self.weight * distillation_loss(logits, soft_labels, self.temperature)
