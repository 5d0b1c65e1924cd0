"""Consolidation: gradient steps that pull the aggregate's behaviour on R toward the anchor."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from fedcl.continuity.behaviour import barlow_continuity_loss, model_outputs, named_layers
from fedcl.training import device_of


@dataclass(frozen=True)
class ConsolidationResult:
    """What one consolidation did."""

    loss_before: float  # L_BC(anchor, Z(theta_agg))
    loss_after: float  # L_BC(anchor, Z(theta_{t+1}))
    steps: int  # steps kept
    undone: int = 0  # steps undone because no fraction of them lowered the loss (monotone)
    shortened: int = 0  # steps kept at a fraction of their length (monotone)


def consolidate(
    model: nn.Module,
    images: torch.Tensor,
    index: torch.Tensor,
    anchor: torch.Tensor,
    *,
    steps: int,
    lr: float,
    optimizer: str = "adam",
    consolidate_input: bool = True,
    representation: str = "probs",
    lambda_offdiag: float | None = None,
    rows: torch.Tensor | None = None,
    monotone: bool = False,
) -> ConsolidationResult:
    """Pull ``model`` (in place) toward the anchor's behaviour on the reference set.

    Takes ``steps`` optimizer steps minimising ``L_BC(anchor, Z(model))``. BatchNorm
    running statistics are not updated (eval mode).

    Parameters
    ----------
    model : nn.Module
        The aggregate ``theta_agg``; becomes ``theta_{t+1}``.
    images : torch.Tensor
        Reference tiles ``M x 3 x H x W``.
    index : torch.Tensor
        The fixed pixel indices (:func:`pixel_index`).
    anchor : torch.Tensor
        ``N x D`` target behaviour ``A_t``.
    steps : int
        Optimizer steps to take (fewer if ``monotone`` stops early).
    lr : float
        Learning rate of every step.
    optimizer : str
        ``adam``: a fresh Adam (its first step moves every parameter by ~``lr``);
        ``normalized``: ``theta -= lr * g / rms(g)``, the gradient's direction with the
        root-mean-square step ``lr`` (rms over all parameters' gradient entries).
    consolidate_input : bool
        False: leave the parameters of :func:`input_parameters` as they are.
    representation : str
        ``probs`` or ``features``; must match how ``anchor`` was computed.
    lambda_offdiag : float, optional
        Off-diagonal weight of the loss (default ``1 / (D - 1)``).
    rows : torch.Tensor, optional
        Boolean mask over the ``N`` rows: the loss counts only these pixels (default all).
    monotone : bool
        Never let a step raise the loss: shorten a step that did by halves (at most
        :data:`BACKTRACK` times) until the loss is lower, or undo it and stop, so the
        result never scores worse against the anchor than ``model`` did (a fresh Adam's
        first step moves every parameter by ~``lr`` and can overshoot when the model is
        already near the anchor).
    """
    held = set() if consolidate_input else {id(p) for p in input_parameters(model, images)}
    params = [p for p in model.parameters() if p.requires_grad and id(p) not in held]
    if optimizer not in _STEPS:
        raise ValueError(f"optimizer must be one of {sorted(_STEPS)}, got {optimizer!r}")
    step = _STEPS[optimizer](params, lr)
    anchor = anchor.detach().to(device_of(model))
    if rows is not None:
        rows = rows.to(anchor.device)
        anchor = anchor[rows]

    def loss_now() -> torch.Tensor:
        z = model_outputs(model, images, index, representation)
        return barlow_continuity_loss(anchor, z if rows is None else z[rows], lambda_offdiag)

    first = loss_now()
    loss, taken, undone, shortened = _descend(params, step, loss_now, first, steps, monotone)
    return ConsolidationResult(
        loss_before=float(first.detach()),
        loss_after=float(loss.detach()),
        steps=taken,
        undone=undone,
        shortened=shortened,
    )


def _descend(
    params: list[nn.Parameter],
    step: Callable[[], None],
    loss_now: Callable[[], torch.Tensor],
    loss: torch.Tensor,
    steps: int,
    monotone: bool,
) -> tuple[torch.Tensor, int, int, int]:
    """Take up to ``steps`` steps from ``loss``; return the last loss and the counts.

    The counts: steps taken, undone (1 if a step was given up), shortened.
    """
    taken, undone, shortened = 0, 0, 0
    while taken < steps:
        for p in params:
            p.grad = None
        loss.backward()
        kept = [p.detach().clone() for p in params] if monotone else []
        step()
        new_loss = loss_now()
        if monotone and float(new_loss.detach()) > float(loss.detach()):
            shorter = _backtrack(params, kept, loss_now, float(loss.detach()))
            if shorter is None:  # no fraction of the step lowers the loss: stop
                undone = 1
                break
            new_loss, shortened = shorter, shortened + 1
        taken += 1
        loss = new_loss
    return loss, taken, undone, shortened


# Halvings a monotone consolidation tries before it gives a step up (1/2 .. 1/32 of it).
BACKTRACK = 5


def _backtrack(
    params: list[nn.Parameter],
    kept: list[torch.Tensor],
    loss_now: Callable[[], torch.Tensor],
    limit: float,
) -> torch.Tensor | None:
    """Shorten the step just taken (from ``kept``) by halves until the loss is below ``limit``.

    Returns the loss at the shortened step, or None with the parameters back at ``kept``.
    A step along a descent direction lowers the loss once it is short enough; Adam's
    first step (every parameter by ~lr) often overshoots near the anchor.
    """
    with torch.no_grad():
        moved = [p.detach() - k for p, k in zip(params, kept, strict=True)]
    for halving in range(1, BACKTRACK + 1):
        with torch.no_grad():
            for p, k, d in zip(params, kept, moved, strict=True):
                p.copy_(k + d * 0.5**halving)
        loss = loss_now()
        if float(loss.detach()) < limit:
            return loss
    with torch.no_grad():
        for p, k in zip(params, kept, strict=True):
            p.copy_(k)
    return None


def input_parameters(model: nn.Module, images: torch.Tensor) -> list[nn.Parameter]:
    """Return the parameters of the layers that read the tiles.

    The model's ``fedcl_input_layers`` (:func:`named_layers`), else every convolution
    with the tiles' channel count as its input channels.
    """
    named = named_layers(model, "fedcl_input_layers")
    if named is not None:
        return [p for m in named for p in m.parameters()]
    channels = images.shape[1]
    return [
        p
        for m in model.modules()
        if isinstance(m, nn.Conv2d) and m.in_channels == channels
        for p in m.parameters()
    ]


def _adam_step(params: list[nn.Parameter], lr: float) -> Callable[[], None]:
    return torch.optim.Adam(params, lr=lr).step


def _normalized_step(params: list[nn.Parameter], lr: float) -> Callable[[], None]:
    @torch.no_grad()
    def step() -> None:
        moving = [(p, p.grad) for p in params if p.grad is not None]
        count = sum(g.numel() for _, g in moving)
        if not count:
            return
        rms = math.sqrt(sum(float(g.pow(2).sum()) for _, g in moving) / count)
        if not math.isfinite(rms) or rms == 0:
            return  # a flat (or broken) loss: nothing to follow
        for p, g in moving:
            p.sub_(g, alpha=lr / rms)

    return step


_STEPS = {"adam": _adam_step, "normalized": _normalized_step}
CONSOLIDATION_OPTIMIZERS = tuple(_STEPS)  # the steps consolidate can take


def mixed(
    start: Mapping[str, torch.Tensor], end: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """Return ``(1 - alpha) * start + alpha * end``, entry by entry (integers: ``start``'s)."""
    return {
        k: torch.lerp(v, end[k].to(v), alpha) if v.is_floating_point() else v.clone()
        for k, v in start.items()
    }


def choose_mix(
    model: nn.Module,
    teacher: Mapping[str, torch.Tensor],
    aggregate: Mapping[str, torch.Tensor],
    outputs: Callable[[nn.Module], torch.Tensor],
    *,
    grid: int,
    lambda_offdiag: float | None = None,
) -> tuple[float, list[float]]:
    """Choose the mix of the teacher's weights into the aggregate's, on the reference set.

    For ``alpha`` in ``grid`` even steps from 0 (the aggregate) to 1 (the teacher),
    ``theta_alpha = (1 - alpha) * aggregate + alpha * teacher`` scores
    ``L_BC(Z(teacher), Z(theta_alpha)) + L_BC(Z(aggregate), Z(theta_alpha))``: how far its
    behaviour on R is from what the federation knew and from what it just learned. The
    lowest score wins (ties: the smallest ``alpha``). ``model`` holds the winner after.

    Returns
    -------
    tuple
        ``alpha`` and every grid point's score.
    """
    ends = []
    for state in (teacher, aggregate):
        model.load_state_dict(state)
        ends.append(outputs(model))
    alphas = [i / (grid - 1) for i in range(grid)] if grid > 1 else [0.0]
    scores = []
    for alpha in alphas:
        model.load_state_dict(mixed(aggregate, teacher, alpha))
        z = outputs(model)
        scores.append(sum(float(barlow_continuity_loss(e, z, lambda_offdiag)) for e in ends))
    best = min(range(len(alphas)), key=lambda i: (scores[i], i))
    model.load_state_dict(mixed(aggregate, teacher, alphas[best]))
    return alphas[best], scores
