"""A model's behaviour on the reference set R, and how two behaviours differ.

A representation ``Z`` is ``N x D`` with ``N = M * P`` rows (M reference tiles, P fixed
pixel positions per tile) and ``D`` columns (class probabilities or decoder features).
The Barlow continuity of two models is the Barlow Twins loss (Zbontar et al., ICML
2021) between their representations: their standardised cross-correlation against
the identity.
"""

from __future__ import annotations

import torch
from monai.losses import BarlowTwinsLoss
from torch import nn

from fedcl.training import device_of

# What a model's behaviour on the reference set is: softmax class probabilities, or the
# decoder's last feature map (model_outputs).
REPRESENTATIONS = ("probs", "features")

# A column whose standard deviation over the N rows is below this, in both models, is
# a class neither predicts anywhere on R: it carries no behaviour to compare.
DEGENERATE_STD = 1e-4


def _correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    # Exactly MONAI BarlowTwinsLoss's standardisation and cross-correlation.
    x = (x - x.mean(0)) / x.std(0).add(1e-6)
    y = (y - y.mean(0)) / y.std(0).add(1e-6)
    return x.t() @ y / x.shape[0]


def _kept(
    z_a: torch.Tensor, z_b: torch.Tensor, lambda_offdiag: float | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Return both outputs' kept columns, the kept mask and the off-diagonal weight.

    A column (near) constant in both is dropped; the weight defaults to ``1 / (D - 1)``
    over the D kept columns.
    """
    if z_a.shape != z_b.shape or z_a.ndim != 2:
        raise ValueError(
            f"z_a and z_b must be N x D of the same shape, got {tuple(z_a.shape)} "
            f"and {tuple(z_b.shape)}"
        )
    keep = (z_a.detach().std(0) > DEGENERATE_STD) | (z_b.detach().std(0) > DEGENERATE_STD)
    kept = int(keep.sum())
    if lambda_offdiag is None:
        lambda_offdiag = 1.0 / (kept - 1) if kept > 1 else 0.0
    return z_a[:, keep], z_b[:, keep], keep, lambda_offdiag


def barlow_continuity_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, lambda_offdiag: float | None = None
) -> torch.Tensor:
    """Differentiable Barlow continuity loss ``L_BC(A, B)`` (see :func:`barlow_continuity`)."""
    z_a, z_b, keep, lambda_offdiag = _kept(z_a, z_b, lambda_offdiag)
    kept = int(keep.sum())
    if kept == 0:  # both constant everywhere: nothing varies, nothing changed
        return z_a.sum() + z_b.sum()  # 0 (no column left), in the graph of both
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
    z_a : torch.Tensor
        ``N x D`` outputs of model A at the N reference pixels.
    z_b : torch.Tensor
        ``N x D`` outputs of model B at the same N reference pixels.
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


def barlow_continuity_columns(
    z_a: torch.Tensor, z_b: torch.Tensor, lambda_offdiag: float | None = None
) -> list[float | None]:
    """Each column's share of :func:`barlow_continuity`: what changed class by class.

    Column ``i`` holds ``(1 - C_ii)^2 + lambda * sum_{j != i} (C_ij - T_ij)^2``; the
    kept columns' mean is :func:`barlow_continuity`. None for a column dropped as
    degenerate in both models. The score averages over classes, so a change in one
    class of D is diluted D-fold; its columns show which class moved.
    """
    with torch.no_grad():
        z_a, z_b, keep, lambda_offdiag = _kept(z_a.double(), z_b.double(), lambda_offdiag)
        kept = int(keep.sum())
        cross = _correlation(z_a, z_b)
        own = (_correlation(z_a, z_a) + _correlation(z_b, z_b)) / 2
        off = ~torch.eye(kept, dtype=torch.bool, device=cross.device)
        redundancy = ((cross - own).pow(2) * off).sum(1)
        shares = (1 - cross.diagonal()).pow(2) + lambda_offdiag * redundancy
    values = iter(shares.tolist())
    return [next(values) if k else None for k in keep.tolist()]


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
