"""Dynamic Barlow Continuity (DBC): the math, as pure functions (no Flower, no Ray).

DBC (Babendererde et al., "Federated-Continual Dynamic Segmentation of Histopathology
guided by Barlow Continuity", 2025) judges a model by how its outputs on a small public
reference set R vary from tile to tile and pixel to pixel, compared with another
model's: the Barlow Twins cross-correlation (Zbontar et al., ICML 2021) between the two
output matrices. The server uses it twice per round (docs/dbc.md):

1. spatially, to reject client updates whose behaviour on R departs from the peer
   consensus (:func:`consensus_filter`);
2. temporally, to pull the aggregate back toward an exponential moving average of the
   global model's past behaviour on R (:func:`update_anchor`, :func:`consolidate`).

Shapes: a representation ``Z`` is ``N x D`` with ``N = M * P`` rows (M reference
tiles, P fixed pixel positions per tile) and ``D`` columns (class probabilities or
decoder features).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.losses import BarlowTwinsLoss
from torch import nn

from fedcl.config import REPRESENTATIONS, DBCSettings
from fedcl.training import device_of

__all__ = [
    "DBCSettings",
    "ShiftDetector",
    "barlow_continuity",
    "barlow_continuity_loss",
    "consensus_filter",
    "consensus_threshold",
    "consolidate",
    "model_outputs",
    "peer_evidence",
    "persistent_outlier",
    "pixel_index",
    "reference_outputs",
    "shared_shift",
    "typical_peer_score",
    "update_anchor",
]

# A column whose standard deviation over the N rows is below this, in both models, is
# a class neither predicts anywhere on R: it carries no behaviour to compare.
DEGENERATE_STD = 1e-4
MAD_SCALE = 1.4826  # MAD -> standard deviation for normally distributed scores
MIN_CALM = 2  # calm rounds before a shift can be told from them (shared_shift)
EVIDENCE_EPS = 1e-4  # peer scores below this are "identical" (identical models: < 1e-6)


def _correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Exactly MONAI BarlowTwinsLoss's standardisation and cross-correlation.
    x = (x - x.mean(0)) / x.std(0).add(1e-6)
    y = (y - y.mean(0)) / y.std(0).add(1e-6)
    return x.t() @ y / x.shape[0]


def barlow_continuity_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, lambda_offdiag: float | None = None
) -> torch.Tensor:
    """Differentiable Barlow continuity loss ``L_BC(A, B)`` (see :func:`barlow_continuity`)."""
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(
            f"z_a and z_b must be N x D of the same shape, got {tuple(z_a.shape)} "
            f"and {tuple(z_b.shape)}"
        )
    keep = (z_a.detach().std(0) > DEGENERATE_STD) | (z_b.detach().std(0) > DEGENERATE_STD)
    kept = int(keep.sum())
    if kept == 0:  # both constant everywhere: nothing varies, nothing changed
        return (z_a * 0).sum() + (z_b * 0).sum()
    if lambda_offdiag is None:
        lambda_offdiag = 1.0 / (kept - 1) if kept > 1 else 0.0
    z_a, z_b = z_a[:, keep], z_b[:, keep]
    loss = BarlowTwinsLoss(lambd=lambda_offdiag)(z_a, z_b)
    if kept > 1 and lambda_offdiag > 0:
        # Class probabilities are correlated by nature (they sum to 1), so even B = A
        # has off-diagonal C_ij != 0, and MONAI's redundancy term would score a model
        # against itself well above 0 and pull consolidation away from the anchor.
        # Measure the off-diagonal against the models' own correlations instead:
        # (C_ij - T_ij)^2 with T = (C_AA + C_BB) / 2, which is 0 for B = A, symmetric,
        # and differs from MONAI's C_ij^2 by O(1/N) for independent random A and B.
        cross = _correlation(z_a, z_b)
        own = (_correlation(z_a, z_a) + _correlation(z_b, z_b)) / 2
        off = ~torch.eye(kept, dtype=torch.bool, device=cross.device)
        loss = loss + lambda_offdiag * ((cross - own)[off].pow(2) - cross[off].pow(2)).sum()
    return loss / kept


def barlow_continuity(
    z_a: torch.Tensor, z_b: torch.Tensor, lambda_offdiag: float | None = None
) -> float:
    """Barlow continuity score between two models' outputs on the reference set.

    ``C = Z_A^T Z_B / N`` after standardising every column over the N rows;
    ``L_BC = [sum_i (1 - C_ii)^2 + lambda * sum_{i != j} (C_ij - T_ij)^2] / D`` with
    ``T = (C_AA + C_BB) / 2`` the models' own column correlations. The core is MONAI's
    ``BarlowTwinsLoss(lambd=lambda)`` (whose off-diagonal target is 0, ``T = 0``)
    divided by D; the correction makes a model score 0 against itself even though its
    output columns are correlated (class probabilities sum to 1). For independent
    random A and B, ``T`` is O(1/sqrt(N)) and the two agree to O(1/N).

    Parameters
    ----------
    z_a, z_b : torch.Tensor
        ``N x D`` outputs of models A and B at the same N reference pixels.
    lambda_offdiag : float, optional
        Weight of the off-diagonal (redundancy) terms; default ``1 / (D - 1)``.

    Returns
    -------
    float
        0 when B's outputs vary exactly as A's (identical models score < 1e-6); about
        1 or more for a drastic change (e.g. permuted classes). Symmetric in A and B.

    Notes
    -----
    A column with (near) zero variance in both A and B (a class neither model predicts
    anywhere on R) is dropped and D counts the kept columns only; a column constant in
    just one of them stays (its ``C_ii`` is 0, a maximal change).
    """
    with torch.no_grad():
        return float(barlow_continuity_loss(z_a.double(), z_b.double(), lambda_offdiag))


def pixel_index(
    num_images: int, height: int, width: int, pixels_per_image: int, seed: int = 0
) -> torch.Tensor:
    """Draw fixed random pixel positions, ``pixels_per_image`` per image.

    Returns
    -------
    torch.Tensor
        ``N`` int64 flat indices into ``num_images x height x width``, ``N = M * P``;
        without repeats within an image while ``P <= height * width``.
    """
    generator = torch.Generator().manual_seed(seed)
    pixels = height * width
    rows = []
    for image in range(num_images):
        if pixels_per_image <= pixels:
            chosen = torch.randperm(pixels, generator=generator)[:pixels_per_image]
        else:
            chosen = torch.randint(pixels, (pixels_per_image,), generator=generator)
        rows.append(chosen + image * pixels)
    return torch.cat(rows)


def named_layers(model: nn.Module, attribute: str) -> list[nn.Module] | None:
    """Return the layers a model names for DBC, or None when it names none.

    A network can say which of its layers DBC should use, as the dotted names of its
    submodules in a class attribute (names, not modules: a module attribute would join
    the ``state_dict``): ``fedcl_feature_layer`` (one name: the layer whose input is the
    feature map of ``representation = features``) and ``fedcl_input_layers`` (the
    layers that read the tiles, for ``consolidate-input = false``). Without them DBC
    takes the last convolution, and every convolution with the tiles' channel count.
    """
    names = getattr(model, attribute, None)
    if names is None:
        return None
    names = (names,) if isinstance(names, str) else tuple(names)
    try:
        return [model.get_submodule(name) for name in names]
    except AttributeError as err:
        raise ValueError(f"{type(model).__name__}.{attribute}: {err}") from None


def _last_conv(model: nn.Module) -> nn.Module:
    named = named_layers(model, "fedcl_feature_layer")
    if named:
        return named[0]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    if not convs:
        raise ValueError(
            "representation='features' needs a model with a final convolution, or a "
            "fedcl_feature_layer naming the layer whose input is the feature map"
        )
    return convs[-1]


def model_outputs(
    model: nn.Module,
    images: torch.Tensor,
    index: torch.Tensor,
    representation: str = "probs",
) -> torch.Tensor:
    """``Z`` of ``model`` at the pixels ``index`` (differentiable; eval-mode BatchNorm).

    Parameters
    ----------
    model : nn.Module
        Segmentation network, ``B x 3 x H x W`` -> ``B x C x H x W`` logits. It is put in
        eval mode: BatchNorm uses, and does not update, its running statistics.
    images : torch.Tensor
        ``M x 3 x H x W`` reference tiles in 0..1.
    index : torch.Tensor
        Flat pixel indices from :func:`pixel_index`.
    representation : str
        ``probs``: softmax class probabilities (D = C). ``features``: the input of the
        network's last convolution, i.e. the decoder's last feature map (D = its
        channels), resized to the tile if it is smaller.
    """
    model.eval()
    device = device_of(model)
    images, index = images.to(device), index.to(device)
    if representation == "probs":
        maps = torch.softmax(model(images), dim=1)
    elif representation == "features":
        captured: list[torch.Tensor] = []
        hook = _last_conv(model).register_forward_hook(
            lambda _m, inputs, _o: captured.append(inputs[0])
        )
        try:
            model(images)
        finally:
            hook.remove()
        maps = captured[-1]
        if maps.shape[-2:] != images.shape[-2:]:
            maps = nn.functional.interpolate(maps, size=images.shape[-2:], mode="nearest")
    else:
        raise ValueError(f"representation must be one of {REPRESENTATIONS}, got {representation!r}")
    flat = maps.permute(0, 2, 3, 1).reshape(-1, maps.shape[1])
    return flat.index_select(0, index)


def reference_outputs(
    model: nn.Module,
    images: torch.Tensor,
    pixels_per_image: int = 256,
    seed: int = 0,
    representation: str = "probs",
) -> torch.Tensor:
    """``Z(theta)``: a model's ``N x D`` outputs on the reference set (no gradients).

    Parameters
    ----------
    model : nn.Module
        The network (put in eval mode).
    images : torch.Tensor
        ``M x 3 x H x W`` reference tiles in 0..1.
    pixels_per_image : int
        P, the fixed pixel positions per tile (default 256), drawn from ``seed``.
    seed : int
        Seed of the pixel positions: the same seed gives the same positions.
    representation : str
        ``probs`` or ``features`` (see :func:`model_outputs`).
    """
    m, _, h, w = images.shape
    index = pixel_index(m, h, w, pixels_per_image, seed)
    with torch.no_grad():
        return model_outputs(model, images, index, representation)


def consensus_threshold(
    peer_scores: Sequence[float], kappa: float = 3.0, floor: float = 0.05
) -> float | None:
    """Rejection threshold ``median + kappa * max(1.4826 * MAD, floor * median + 1e-4)``.

    Returns None with fewer than 3 scores: too few peers to call one an outlier.
    """
    if len(peer_scores) < 3:
        return None
    median = statistics.median(peer_scores)
    mad = MAD_SCALE * statistics.median(abs(p - median) for p in peer_scores)
    return median + kappa * max(mad, floor * median + 1e-4)


def consensus_filter(
    peer_scores: Sequence[float], kappa: float = 3.0, floor: float = 0.05
) -> list[bool]:
    """Accept (True) or reject each reply by its peer score (the first version's round rule).

    Parameters
    ----------
    peer_scores : sequence of float
        ``p_k = L_BC(Z_med, Z(theta_k))`` per reply, ``Z_med`` the element-wise median
        of the replies' outputs.
    kappa : float
        Threshold in robust standard deviations above the median (default 3).
    floor : float
        Lower bound on the spread as a fraction of the median score (default 0.05),
        so near-identical replies do not make every small difference an outlier.

    Returns
    -------
    list of bool
        ``p_k <= threshold``; all True with fewer than 3 replies.
    """
    threshold = consensus_threshold(peer_scores, kappa, floor)
    return [threshold is None or p <= threshold for p in peer_scores]


def update_anchor(anchor: torch.Tensor | None, z: torch.Tensor, beta: float) -> torch.Tensor:
    """EMA anchor ``A_t = beta * A_{t-1} + (1 - beta) * Z(theta_t)``; starts at ``z``."""
    return z.clone() if anchor is None else beta * anchor + (1 - beta) * z


def peer_evidence(peer_scores: Sequence[float], floor: float = 0.0) -> list[float] | None:
    """Each reply's log peer score relative to the honest majority's typical score.

    ``e_k = log((p_k + eps) / (max(c, floor) + eps))`` with ``c`` the median of the
    lowest ``floor(n / 2) + 1`` scores: with fewer than half the replies shifted, those
    are honest, so ``c`` is an honest hospital's score whatever the shifted ones do (a
    median and MAD over all replies are pulled up by 2 shifted out of 5). In log units
    because honest scores are skewed: a typical honest reply is within a factor of 2-3
    of ``c`` (``|e| < 1``), yet a single round may put one 5-8 times above it early in
    training. ``floor``: in a calm federation ``c`` is tiny, and a hospital that is only
    a little different stands many times above it; below ``floor`` the typical score is
    no yardstick (``L_BC`` is a mean squared correlation deficit per class: 0.02 is a
    correlation of about 0.86 with the consensus). None with fewer than 3 replies: too
    few peers to say what is typical.
    """
    if len(peer_scores) < 3:
        return None
    typical = max(typical_peer_score(peer_scores), floor)
    return [math.log((p + EVIDENCE_EPS) / (typical + EVIDENCE_EPS)) for p in peer_scores]


def typical_peer_score(peer_scores: Sequence[float]) -> float:
    """Return the honest majority's typical peer score: the median of the lowest n // 2 + 1."""
    return statistics.median(sorted(peer_scores)[: len(peer_scores) // 2 + 1])


def persistent_outlier(evidence: Sequence[float], tau: float, window: int) -> bool:
    """Reject a hospital whose mean evidence over its last ``window`` rounds exceeds ``tau``.

    A shifted hospital is far from its peers round after round; an honest one only
    now and then. Averaging a hospital's :func:`peer_evidence` over the rounds it
    replied separates the two where one round's scores overlap (measured: DBC's
    per-round rule rejected 13 % of honest replies under iid and missed shifted ones
    in early rounds; see docs/RESULTS.md).
    """
    recent = list(evidence)[-window:]
    return bool(recent) and statistics.fmean(recent) > tau


def shared_shift(history: Sequence[float], score: float, rho: float, window: int) -> bool:
    """Whether this round's movement ``score`` jumps above its recent history.

    ``score`` is the round's movement (the median anchor score of the accepted replies:
    how far the hospitals moved the global model's behaviour on R this round); a shift
    that all hospitals share (new stain, new case mix) moves every one of them at once,
    well past the movement of the rounds before, while ordinary learning moves less and
    less. True when ``score > (1 + rho) * median`` of the last ``window`` values of
    ``history``; False with fewer than :data:`MIN_CALM` values: one round is no level
    to jump from (measured: an iid run's round 5 moved 5x its round 4, see
    docs/RESULTS.md).
    """
    recent = list(history)[-window:]
    return len(recent) >= MIN_CALM and score > (1 + rho) * statistics.median(recent)


class ShiftDetector:
    """Tells the rounds of a shift all hospitals share, from the round's movement alone.

    Each round's movement (how far the accepted replies moved the global model's
    behaviour on R) is compared with the calm rounds' (:func:`shared_shift`). A round
    above the calm level belongs to a shift; the shift lasts until a round is calm
    again, and is consolidated for at most ``bound`` of its rounds (0: all of them), so
    that consolidation cannot keep its own trigger going (re-learning what it undid is
    movement too). A round that jumps above the shift's own lowest movement by the same
    factor starts a new shift: with short stages the movement may not get back to calm
    before the next stage begins.

    Parameters
    ----------
    rho : float
        A round is a shift when its movement is above ``(1 + rho)`` x the calm median.
    window : int
        Calm rounds that make the level (the last ``window``).
    bound : int
        Rounds of one shift to consolidate, at most (0: no bound).
    """

    def __init__(self, *, rho: float, window: int, bound: int) -> None:
        self.rho, self.window, self.bound = rho, window, bound
        self.calm: list[float] = []  # movements of the calm rounds
        self.shift: list[float] = []  # movements of the current shift's rounds

    def update(self, movement: float) -> bool:
        """Record a round's movement; return whether to consolidate this round."""
        if not shared_shift(self.calm, movement, self.rho, self.window):
            self.calm.append(movement)
            self.shift = []
            return False
        if self.shift and movement > (1 + self.rho) * min(self.shift):
            self.shift = []  # a new shift on top of the last one
        self.shift.append(movement)
        return not self.bound or len(self.shift) <= self.bound

    def state_dict(self) -> dict[str, list[float]]:
        """Return the detector's history (for checkpoints)."""
        return {"calm": list(self.calm), "shift": list(self.shift)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s history."""
        self.calm, self.shift = list(state["calm"]), list(state["shift"])


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
    images, index : torch.Tensor
        Reference tiles ``M x 3 x H x W`` and the fixed pixel indices.
    anchor : torch.Tensor
        ``N x D`` target behaviour ``A_t``.
    steps, lr : int, float
        This many steps at this learning rate.
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

    loss = loss_now()
    before, taken, undone, shortened = float(loss.detach()), 0, 0, 0
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
    return ConsolidationResult(
        loss_before=before,
        loss_after=float(loss.detach()),
        steps=taken,
        undone=undone,
        shortened=shortened,
    )


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
