"""Per-example evaluation under an attack: the core that ``part evaluate`` and the tests build on."""

from __future__ import annotations

import torch
from torch import nn

from part.attacks import Attack
from part.data import DeviceLoader, Split


def correct_per_example(model: nn.Module, split: Split, attack: Attack | None = None, *, batch_size: int = 500,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool (N,) on the model's device: is example i classified correctly (after ``attack``, if given)?

    The model is evaluated in eval mode (restored afterwards); batches stay on the device and the
    result is gathered there, so one evaluation costs a single host transfer at the end.
    """
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for batch in DeviceLoader(split, batch_size, device).epoch(plain=True):
            x = batch.x if attack is None else attack(model, batch.x, batch.y, generator=generator)
            with torch.no_grad():
                out.append(model(x).argmax(1) == batch.y)
        return torch.cat(out)
    finally:
        model.train(was_training)
