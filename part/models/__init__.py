"""Model zoo: the backbones of the PART paper (ResNet-18, PreAct ResNet-18, WRN-34-10) plus a
tiny CNN for CPU-sized data sets, all built by name from the run configuration.

Every model takes images in [0, 1] with no normalisation layer (the ε budgets are defined in pixel
space), accepts any spatial size ≥ 8 through adaptive pooling, and exposes ``cam_layer``: the
module whose 4D output Grad-CAM reads to build PART's per-pixel ε-map.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from part.base.vocabulary import WIDTH_MODELS

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

def build_model(name: str, num_classes: int, in_channels: int = 3, width: int | None = None) -> nn.Module:
    """Instantiate ``name`` (``width``: None for the architecture's own); the seed must be set by the caller
    so initialisation is reproducible."""
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(_BUILDERS)}") from None
    if width is None:
        return builder(num_classes=num_classes, in_channels=in_channels)
    if name not in WIDTH_MODELS:
        raise ValueError(f"width {width} given for {name!r}; only {', '.join(WIDTH_MODELS)} has a width setting")
    return builder(num_classes=num_classes, in_channels=in_channels, width=width)


def load_weights(model: nn.Module, state: object, source: str) -> nn.Module:
    """``model.load_state_dict(state)`` with an error naming ``source`` and what does not fit, instead of
    torch's traceback: a weights file of another architecture, class count or input channels."""
    if not isinstance(state, dict):
        raise ValueError(f"{source}: holds a {type(state).__name__}, expected a state dict of {type(model).__name__}")
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state)
                    if getattr(state[k], "shape", None) != expected[k].shape)
    if missing or unexpected or shapes:
        parts = [f"{label} {keys[:3]}{' …' if len(keys) > 3 else ''} ({len(keys)})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", shapes))
                 if keys]
        raise ValueError(f"{source}: not weights of this {type(model).__name__} (the run's config): "
                         + "; ".join(parts) + ". Was it written by another run? Retrain or restore the right file")
    model.load_state_dict(state)
    return model
