"""What the benchmarks share: synthetic data, the training pieces of one run, timed epochs, and the
authors' release's per-image CAM loop to compare the batched refresh with.

The benchmarks time the engine's own code (``part.training.train.run_epoch``, ``EpsMapStore.refresh``), never a
copy of it: ``part.training.train.build_engine`` assembles the pieces ``part.training.train.train`` trains a run with, so a
measured epoch is the epoch a real run executes. Epochs are timed on a few batches after one warm-up
epoch (kernel selection, ``torch.compile``, CUDA-graph capture) and scaled linearly to
:data:`EPOCH_IMAGES`, since an epoch's cost is proportional to its number of batches.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from part.base.config import RunConfig
from part.data.prepared import SHAPES, PreparedDataset, Split
from part.training.train import build_engine, run_epoch

EPOCH_IMAGES = 50_000
"""The images of one CIFAR-10 training epoch: what every epoch time is extrapolated to."""


def synthetic_split(n: int, channels: int, size: int, classes: int, seed: int = 0) -> Split:
    """Random uint8 images and labels: speed and the smoke checks do not depend on content."""
    g = torch.Generator().manual_seed(seed)
    return Split(torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g),
                 torch.randint(0, classes, (n,), generator=g))


def synthetic_dataset(name: str, n_train: int, n_test: int, seed: int = 0) -> PreparedDataset:
    """A prepared dataset shaped like ``name`` (``part.data.prepared.SHAPES``), so ``part train`` accepts it under that name."""
    channels, height, _, classes = SHAPES[name]
    return PreparedDataset(name, synthetic_split(n_train, channels, height, classes, seed),
                           synthetic_split(n_test, channels, height, classes, seed + 1), classes,
                           {"source": "synthetic (benchmarks/harness.py)", "seed": seed})


def timed_epoch(cfg: RunConfig, split: Split, num_classes: int, device: torch.device) -> dict[str, Any]:
    """Epoch 1 of ``cfg`` after a warm-up epoch 0, with its time scaled to :data:`EPOCH_IMAGES` images.

    ``cfg`` needs two epochs; for a PART method with ``warmup_epochs: 0`` and ``refresh_every: 1`` both
    refresh, so the timed epoch includes its refresh as in a PART (s = 1) run.
    """
    engine = build_engine(cfg, split, num_classes, device)
    run_epoch(engine, 0)
    record = run_epoch(engine, 1)
    scale = EPOCH_IMAGES / len(split)
    return {"images_timed": len(split), "seconds": record["seconds"], "refresh_seconds": record["refresh_seconds"],
            "images_per_second": record["images_per_second"], "epoch_seconds_50k": record["seconds"] * scale,
            "refresh_seconds_50k": record["refresh_seconds"] * scale, "loss": record["loss"]}


def release_style_maps(model: nn.Module, images: torch.Tensor) -> float:
    """The release's refresh, one image at a time: grad-cam package, PIL bicubic resize, jet, standardise.

    Returns images/s. Mirrors its structure (per-image CAM call and CPU post-processing), not its code.
    """
    from matplotlib import colormaps
    from PIL import Image
    from pytorch_grad_cam import GradCAM

    jet = colormaps["jet"]
    model.eval()
    t0 = time.perf_counter()
    with GradCAM(model=model, target_layers=[model.cam_layer]) as cam:
        for img in images:
            gray = cam(input_tensor=img[None], targets=None)[0]
            resized = np.asarray(Image.fromarray(gray).resize(img.shape[-2:][::-1], Image.BICUBIC))
            rgb = jet(np.clip(resized, 0, 1) ** 2)[..., :3]
            z = (rgb - rgb.mean()) / rgb.std()
            torch.from_numpy(z > 1).to(images.device)
    return len(images) / (time.perf_counter() - t0)
