"""Which parts of a model's normalisation a hospital keeps to itself (FedBN, SiloBN).

- ``layers`` (FedBN, Li et al., ICLR 2021): every BatchNorm layer stays local, its
  affine weight and bias and its running statistics; the rest is shared.
- ``statistics`` (SiloBN, Andreux et al., DART 2020): the running statistics stay
  local; the affine weight and bias are shared with the other layers.
- ``none``: everything is shared (every other strategy).

A hospital keeps the local part in its ``Context.state`` across rounds and puts it
back into every global model it receives, before it evaluates or trains.
"""

from __future__ import annotations

from torch import nn

from fedcl.errors import unknown_name

LOCAL_NORMS = ("none", "layers", "statistics")
_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")
_AFFINE = ("weight", "bias")


def batch_norms(model: nn.Module) -> dict[str, nn.modules.batchnorm._BatchNorm]:
    """Return ``{module name: layer}`` for every BatchNorm layer of ``model``."""
    return {
        name: m
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    }


def has_running_stats(model: nn.Module) -> bool:
    """Whether ``model`` holds BatchNorm running statistics (instance norm: no)."""
    return any(m.track_running_stats for m in batch_norms(model).values())


def local_norm_keys(model: nn.Module, mode: str) -> list[str]:
    """State-dict keys of ``model`` that a hospital keeps local under ``mode``."""
    if mode not in LOCAL_NORMS:
        raise unknown_name("local-norm", mode, LOCAL_NORMS)
    if mode == "none":
        return []
    parts = _STATISTICS + (_AFFINE if mode == "layers" else ())
    state = model.state_dict()
    return [
        f"{name}.{part}"
        for name in batch_norms(model)
        for part in parts
        if f"{name}.{part}" in state
    ]
