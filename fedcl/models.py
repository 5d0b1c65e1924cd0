"""Segmentation networks by name (no downloads: ``encoder_weights=None``).

The default, ``unet``, is MONAI's ``UNet(channels=(16, 32, 64, 128), strides=(2, 2, 2),
num_res_units=1)`` with batch normalisation: about 0.2 M parameters, fast enough to
train a federation of hospitals on two CPU cores. ``unet-instance`` is the same network
with instance normalisation: every tile normalised by its own statistics, so the model
carries no running statistics of the hospitals' stains (docs/decision-log.md).
``unet-group`` is the same network with group normalisation (Wu and He, "Group
Normalization", ECCV 2018): every tile normalised by its own statistics too, no running
statistics, but over groups of channels (8 groups a layer, as MONAI's SegResNet) rather
than each channel on its own.
``smp-resnet18`` / ``smp-resnet34`` (segmentation-models-pytorch U-Nets, 14 M / 24 M
parameters) are for real data and GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from monai.networks.nets import BasicUNet, UNet
from torch import nn

from fedcl.errors import FedclError
from fedcl.plugins import MODELS as NAMES


def _monai_unet(norm: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        return UNet(
            spatial_dims=2,
            in_channels=3,
            out_channels=num_classes,
            channels=(16, 32, 64, 128),
            strides=(2, 2, 2),
            num_res_units=1,
            norm=norm,
        )

    return build


# Groups of unet-group's normalisation layers: 2 channels a group in the 16-channel layers,
# 16 in the 128-channel ones (MONAI's SegResNet default).
GROUPS = 8


def _monai_unet_group(num_classes: int) -> nn.Module:
    # MONAI's UNet takes one norm for every layer, and the top up-sampling convolution
    # normalises num_classes channels (5), which 8 groups do not divide: so the batch
    # norm network with each BatchNorm swapped for a GroupNorm of gcd(8, C) groups (8,
    # and 1 for the num_classes layer). Same weights, same initialisation (weight 1, bias
    # 0), no running statistics.
    model = _monai_unet("batch")(num_classes)
    for name, layer in list(model.named_modules()):
        if isinstance(layer, nn.modules.batchnorm._BatchNorm):
            parent, _, child = name.rpartition(".")
            channels = layer.num_features
            group = nn.GroupNorm(math.gcd(GROUPS, channels), channels)
            model.get_submodule(parent).add_module(child, group)
    return model


def _monai_basic_unet(num_classes: int) -> nn.Module:
    return BasicUNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=num_classes,
        features=(16, 16, 32, 64, 128, 16),
        norm="batch",
    )


def _smp_unet(encoder: str) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        # imported here: smp pulls in timm, which every simulated hospital would
        # otherwise import at start-up for nothing with the default MONAI U-Net
        import segmentation_models_pytorch as smp

        return smp.Unet(
            encoder_name=encoder, encoder_weights=None, in_channels=3, classes=num_classes
        )

    return build


# The built-ins, by the names fedcl.plugins.MODELS gives them: num_classes -> network.
unet = _monai_unet("batch")
unet_instance = _monai_unet("instance")
unet_group = _monai_unet_group
basic_unet = _monai_basic_unet
smp_resnet18 = _smp_unet("resnet18")
smp_resnet34 = _smp_unet("resnet34")


def build_model(name: str, num_classes: int) -> nn.Module:
    """Build a fresh, randomly initialised 2-D segmentation network.

    Parameters
    ----------
    name : str
        A built-in (``unet``, ``unet-instance``, ``unet-group``, ``basic-unet``,
        ``smp-resnet18``, ``smp-resnet34``; :data:`fedcl.plugins.MODELS`), a name an
        installed package registers under the entry-point group ``fedcl.models``, or
        ``package.module:function``; a plug-in is a function ``num_classes ->
        torch.nn.Module``.
    num_classes : int
        Output channels (logits), one per class including background.

    Returns
    -------
    torch.nn.Module
        Maps ``B x 3 x H x W`` float images in 0..1 to ``B x num_classes x H x W``
        logits. H and W must be divisible by 8 (``unet``) or 16/32 (the others).
    """
    build = NAMES.load(name)  # an unknown name: the error, did-you-mean
    model = build(num_classes) if callable(build) else None
    if not isinstance(model, nn.Module):
        raise FedclError(
            f"model {name!r} must be a function num_classes -> torch.nn.Module; "
            f"it gave {type(model).__name__}"
        )
    return model
