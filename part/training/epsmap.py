"""PART's per-pixel budgets: compute, store and hand out an ε-map for every training image.

A refresh runs the batched CAM over the whole training set once (every s PART epochs) and keeps
one boolean importance mask per image on the training device. Each training batch then gets
``ε_map = where(mask, ε, ε_low)`` for its images.

Two pairings between images and masks:
* ``own`` (default, the paper's method): masks are computed on the un-augmented images, stored by
  dataset index, and put through the same crop/flip as the image they belong to (padding counts
  as unimportant);
* ``batch_index`` (the authors' release): masks are computed on one shuffled, augmented pass and
  mask *i* of that pass goes to position *i* of every later epoch's order — another image's map.

The ``quadrant_*`` recipes (the paper's proof of concept) skip the CAM: one fixed mask in the
coordinates of the input the model sees, so crops and flips do not move the low quadrant and the
pairing does not apply.

In a multi-process run each process computes the masks of its rows of every refresh batch and all
processes then hold every mask (:func:`part.training.distributed.assemble`): any image may land in any
process's rows of a later batch.
"""

from __future__ import annotations

import torch
from torch import nn

from part.base.config import RunConfig
from part.data.prepared import Batch, DeviceLoader, make_generator
from part.training import distributed
from part.training.cam import unit_maps
from part.training.importance import QUADRANTS, eps_map, importance_mask, quadrant_mask

REFRESH_STREAM = 3  # the generator stream (see data.derive_seed) of the batch_index refresh pass


class EpsMapStore:
    """The importance masks of a training set, refreshed from the model and paired with batches."""

    def __init__(self, cfg: RunConfig, masks: torch.Tensor | None = None):
        self.cfg = cfg
        self.masks = masks  # bool (N, 1 or 3, H, W) by dataset index or epoch position; (1, 1, H, W) for a quadrant

    @torch.no_grad()
    def refresh(self, model: nn.Module, loader: DeviceLoader, epoch: int, autocast) -> None:
        """Recompute every mask with the current model (eval mode, parameters untouched)."""
        cfg = self.cfg
        if cfg.mask.recipe in QUADRANTS:
            self.masks = quadrant_mask(*loader.images.shape[-2:], cfg.mask.recipe, loader.device)
            return
        if cfg.mask.pairing == "batch_index":
            batches = loader.epoch(make_generator(loader.device, cfg.seed, epoch, REFRESH_STREAM))
        else:
            batches = loader.epoch(plain=True)
        parts, positions = [], []
        for batch in batches:  # in a multi-process run: this process's rows of each batch
            with torch.enable_grad(), autocast():
                maps = unit_maps(model, batch.x, method=cfg.cam.method, backend=cfg.cam.backend,
                                 mode=cfg.cam.resize, normalise=cfg.cam.normalise)
            parts.append(importance_mask(maps.float(), cfg.mask.recipe))
            positions.append(batch.position)
        self.masks = distributed.assemble(parts, positions, len(loader.labels))

    def for_batch(self, batch: Batch) -> torch.Tensor:
        """The ε-map (B, 1 or 3, H, W) of a training batch."""
        if self.masks is None:
            raise RuntimeError("ε-maps requested before the first refresh")
        if self.cfg.mask.recipe in QUADRANTS:
            mask = self.masks.expand(len(batch.y), -1, -1, -1)
        elif self.cfg.mask.pairing == "batch_index":
            mask = self.masks[batch.position]
        else:
            mask = batch.augmentation(self.masks[batch.index], fill=False)
        return eps_map(mask, self.cfg.attack.eps, self.cfg.attack.eps_low)

