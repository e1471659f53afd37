"""Model zoo: the backbones of the PART paper (ResNet-18, PreAct ResNet-18, WRN-34-10) plus a
tiny CNN for CPU-sized data sets, all built by name from the run configuration.

Every model takes images in [0, 1] with no normalisation layer (the ε budgets are defined in pixel
space), accepts any spatial size ≥ 8 through adaptive pooling, and exposes ``cam_layer``: the
module whose 4D output Grad-CAM reads to build PART's per-pixel ε-map.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from part.models.preact_resnet import preact_resnet18
from part.models.resnet import resnet18
from part.models.small_cnn import small_cnn
from part.models.wideresnet import wrn34_10

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "resnet18": resnet18,
    "preact_resnet18": preact_resnet18,
    "wrn34_10": wrn34_10,
    "small_cnn": small_cnn,
}

MODELS: tuple[str, ...] = tuple(_BUILDERS)


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Instantiate ``name``; the seed must be set by the caller so initialisation is reproducible."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(MODELS)}") from None
    return builder(num_classes=num_classes, in_channels=in_channels)
