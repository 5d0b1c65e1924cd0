"""A user's own networks, loaded by tests through ``--model plugin_model:tiny``."""

from __future__ import annotations

from torch import nn


def tiny(num_classes: int) -> nn.Module:
    """Two convolutions with BatchNorm: a plug-in model as small as a network gets."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, num_classes, 1),
    )


def not_a_network(num_classes: int) -> int:
    return num_classes
