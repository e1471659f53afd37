"""Class activation maps for PART's per-pixel budgets, batched so a refresh costs seconds.

PART re-derives every training image's ε-map from a CAM of the current model every few epochs.
The authors' release computes these one image at a time (a forward, a backward and a CPU
round-trip each), which ran at 159 img/s on an H100 — slower than the adversarial training it
serves. Here a whole batch takes ONE forward and ONE backward and never leaves the device
(11–28k img/s on the same GPU): in eval mode the samples of a batch are independent, so the
gradient of the summed predicted-class logits with respect to the layer's activation is, image by
image, the gradient each image would get alone.

Two backends produce the unit maps (B, H, W) in [0, 1] that :mod:`part.training.importance` turns into
ε-maps:

* ``"torch"`` (default): :func:`class_activation_maps` + :func:`upsample_unit`, the formulas of
  grad-cam 1.5.7 for Grad-CAM, XGradCAM and LayerCAM reimplemented on tensors;
* ``"grad-cam"``: the ``pytorch_grad_cam`` package itself (:func:`gradcam_package_maps`), which
  offers every CAM it implements, serves as the oracle the torch backend is tested against, and
  is as slow as any per-image, NumPy-based pipeline.

Both leave the model as they found it: eval mode only for the computation (batch-norm uses its
running statistics and does not update them), every module's training flag restored afterwards,
no parameter ``.grad`` touched, no hook left registered.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from part.base.runtime import eval_mode
from part.base.vocabulary import CAM_BACKENDS, CAM_NORMALISATIONS, RESIZES, TORCH_CAM_METHODS
from part.training.resize import pil_bicubic_resize


@functools.cache
def package_cams() -> dict[str, type]:
    """The package's CAM classes that share BaseCAM's (model, target_layers) interface, by the names
    its own examples use ("gradcam++", "kpca_cam", ...).

    Imported on first use: pytorch_grad_cam pulls in OpenCV, matplotlib and scikit-learn (seconds
    per process), which the default torch backend — and every evaluation job — does not need. The
    meta-methods built on top of a base CAM (FinerCAM, RefineCAM, SESS) are left out: they need
    extra choices (comparison classes, a base method, scales) that a single method name cannot carry.
    """
    import pytorch_grad_cam
    from pytorch_grad_cam.base_cam import BaseCAM

    return {obj.__name__.lower().replace("plusplus", "++"): obj for obj in vars(pytorch_grad_cam).values()
            if isinstance(obj, type) and issubclass(obj, BaseCAM) and obj is not BaseCAM}


_SCALE_EPS = 1e-7  # grad-cam's scale_cam_image: (cam - min) / (max + 1e-7); cam.normalise: max_eps
_XGRADCAM_EPS = 1e-7  # grad-cam's XGradCAM: sum(G * A) / (sum(A) + 1e-7)


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of {', '.join(map(repr, choices))}")


def class_activation_maps(
    model: nn.Module, x: torch.Tensor, method: str = "gradcam", layer: nn.Module | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """CAMs (B, h, w) float32 at ``layer``'s resolution and predicted classes (B,) of a batch.

    Each image is explained for its own predicted class. The activation is captured by a forward
    hook and differentiated with ``torch.autograd.grad``, so parameters never receive a ``.grad``
    (a training step's accumulated gradients survive a refresh) and ``x`` needs no gradient. The
    weighting runs in float32 so the maps are usable under bf16 autocast. ``layer`` defaults to
    ``model.cam_layer``.
    """
    _check_choice("CAM method", method, TORCH_CAM_METHODS)
    layer = model.cam_layer if layer is None else layer
    captured: list[tuple[torch.Tensor, int]] = []

    def capture(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if not output.requires_grad:  # frozen parameters: differentiate w.r.t. the activation anyway
            output = output.detach().requires_grad_()
        captured.append((output, output._version))
        return output

    handle = layer.register_forward_hook(capture)
    try:
        with eval_mode(model), torch.enable_grad():
            logits = model(x.detach())
            if len(captured) != 1:
                raise RuntimeError(f"the CAM layer ran {len(captured)} times in one forward pass; expected once")
            activation, version = captured[0]
            if activation._version != version:
                raise RuntimeError("the CAM layer's output was modified in place later in the forward pass "
                                   "(an inplace ReLU?); its CAM would describe the modified tensor")
            pred = logits.argmax(dim=1)
            # Gradients of the sum are the per-image gradients: eval-mode samples do not interact.
            score = logits.gather(1, pred[:, None]).sum()
            (grad,) = torch.autograd.grad(score, activation)
    finally:
        handle.remove()

    a = activation.detach().float()
    g = grad.float()
    if method == "gradcam":
        weights = g.mean(dim=(2, 3))
        cam = (weights[:, :, None, None] * a).sum(dim=1)
    elif method == "xgradcam":
        weights = (g * a / (a.sum(dim=(2, 3), keepdim=True) + _XGRADCAM_EPS)).sum(dim=(2, 3))
        cam = (weights[:, :, None, None] * a).sum(dim=1)
    else:  # layercam
        cam = (g.clamp(min=0) * a).sum(dim=1)
    return cam.clamp(min=0), pred


def unit_scale(cam: torch.Tensor, normalise: str = "max_eps") -> torch.Tensor:
    """Each map (B, h, w) shifted to minimum 0 and divided by its new maximum: ``cam.normalise``.

    * ``"max_eps"``: divide by max + 1e-7, grad-cam's ``scale_cam_image`` (the oracle's convention);
      a map whose values are not large against 1e-7 ends below 1 (max 1e-3: at 1 − 1e-4);
    * ``"max"``: divide by the max alone, as torchcam 0.3.2 (the authors' release) does, so the
      maximum is exactly 1 at any magnitude. A constant map, where torchcam divides 0 by 0, gives
      zeros here, as under ``"max_eps"``.
    """
    _check_choice("CAM normalisation", normalise, CAM_NORMALISATIONS)
    unit = cam - cam.amin(dim=(1, 2), keepdim=True)
    top = unit.amax(dim=(1, 2), keepdim=True)
    if normalise == "max_eps":
        return unit / (top + _SCALE_EPS)
    return unit / torch.where(top > 0, top, torch.ones_like(top))


def upsample_unit(cam: torch.Tensor, size: Sequence[int], mode: str = "bicubic",
                  normalise: str = "max_eps") -> torch.Tensor:
    """Scale each CAM to [0, 1] (:func:`unit_scale`), then resize (B, h, w) -> (B, *size).

    Normalising before resizing is grad-cam's order (scale_cam_image) and the release's, so the
    torch backend can be checked against both. torch's modes are clamped to undo bicubic overshoot,
    which would otherwise put values outside the unit interval the importance recipes assume;
    ``"pil_bicubic"`` (:mod:`part.training.resize`) keeps its overshoot, as the release standardises it.
    """
    unit = unit_scale(cam, normalise)
    if mode == "pil_bicubic":
        return pil_bicubic_resize(unit, tuple(size))
    align = False if mode in ("bilinear", "bicubic") else None
    resized = F.interpolate(unit[:, None], size=tuple(size), mode=mode, align_corners=align)
    return resized[:, 0].clamp(0.0, 1.0)


def gradcam_package_maps(model: nn.Module, x: torch.Tensor, method: str) -> torch.Tensor:
    """``pytorch_grad_cam``'s maps (B, H, W) float32 on ``x.device``, for any of its CAM classes.

    The package loops over images in NumPy and calls ``model.zero_grad()`` + ``backward()``; the
    parameters' ``.grad`` are put back as they were and its hooks are released in a ``finally``
    (its context manager would swallow an IndexError and return nothing).
    """
    _check_choice("grad-cam method", method, tuple(package_cams()))
    saved_grads = [(p, p.grad) for p in model.parameters()]
    cam = None
    try:
        with eval_mode(model):
            cam = package_cams()[method](model=model, target_layers=[model.cam_layer])
            maps = cam(input_tensor=x.detach(), targets=None)
    finally:
        if cam is not None:
            cam.activations_and_grads.release()
        for p, g in saved_grads:
            p.grad = g
    return torch.from_numpy(np.asarray(maps, dtype=np.float32)).to(x.device)


def unit_maps(
    model: nn.Module, x: torch.Tensor, method: str = "gradcam", backend: str = "torch", mode: str = "bicubic",
    normalise: str = "max_eps",
) -> torch.Tensor:
    """Per-image CAMs in [0, 1] at the input's size (B, H, W): what the importance recipes consume.

    ``mode`` and ``normalise`` are the torch backend's upsampling (one of :data:`RESIZES`, or any
    other mode of ``F.interpolate``) and unit scaling (:func:`unit_scale`); the grad-cam backend
    always scales with max + 1e-7 and resizes with OpenCV's bilinear interpolation.
    """
    _check_choice("CAM backend", backend, CAM_BACKENDS)
    if backend == "torch":
        cam, _ = class_activation_maps(model, x, method)
        return upsample_unit(cam, x.shape[-2:], mode, normalise)
    return gradcam_package_maps(model, x, method)
