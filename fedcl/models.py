"""Segmentation networks by name (no downloads: ``encoder_weights=None``).

The default, ``unet``, is MONAI's ``UNet(channels=(16, 32, 64, 128), strides=(2, 2, 2),
num_res_units=1)`` with batch normalisation: about 0.2 M parameters, fast enough to
train a federation of hospitals on two CPU cores. ``unet-instance`` is the same network
with instance normalisation: every tile normalised by its own statistics, so the model
carries no running statistics of the hospitals' stains (docs/RESULTS.md, forgetting).
``smp-resnet18`` / ``smp-resnet34`` (segmentation-models-pytorch U-Nets, 14 M / 24 M
parameters) are for real data and GPUs.
"""

from __future__ import annotations

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
basic_unet = _monai_basic_unet
smp_resnet18 = _smp_unet("resnet18")
smp_resnet34 = _smp_unet("resnet34")


def build_model(name: str, num_classes: int) -> nn.Module:
    """Build a fresh, randomly initialised 2-D segmentation network.

    Parameters
    ----------
    name : str
        A built-in (``unet``, ``unet-instance``, ``basic-unet``, ``smp-resnet18``,
        ``smp-resnet34``; :data:`fedcl.plugins.MODELS`), a name an installed package registers
        under the entry-point group ``fedcl.models``, or ``package.module:function``;
        a plug-in is a function ``num_classes -> torch.nn.Module``.
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
