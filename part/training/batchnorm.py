"""Batch norm as the authors' release trained it: ``nn.DataParallel`` on four GPUs, on one device.

Under ``nn.DataParallel`` every train-mode forward is split with ``torch.chunk`` into one slice per
GPU, and each replica's batch norm normalises its slice with that slice's own mean and variance;
the running statistics that survive are those of the first replica, i.e. of the first slice (the
other replicas' updates are discarded with them). With batch 128 on four GPUs the paper's models
were normalised over 32 images at a time. :class:`SlicedBatchNorm2d` computes exactly that on a
single device, so a one-GPU run can train as the paper's did — or measure what it changes.

Only train mode differs: in eval mode (attacks, CAMs, evaluation) it is ``nn.BatchNorm2d``, and
its parameters and buffers are those of ``nn.BatchNorm2d``, so checkpoints load into either.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SlicedBatchNorm2d(nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose train-mode statistics come from each of ``slices`` chunks of the batch."""

    def __init__(self, num_features: int, slices: int, **kwargs) -> None:
        super().__init__(num_features, **kwargs)
        self.slices = slices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.slices == 1:
            return super().forward(x)
        first, *rest = x.chunk(self.slices)
        out = [super().forward(first)]  # the only slice whose statistics reach the running buffers
        out += [F.batch_norm(part, None, None, self.weight, self.bias, True, 0.0, self.eps) for part in rest]
        return torch.cat(out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, slices={self.slices}"


def slice_batchnorm(module: nn.Module, slices: int) -> nn.Module:
    """``module`` with every ``nn.BatchNorm2d`` replaced, in place, by a :class:`SlicedBatchNorm2d`
    holding the same parameters and buffers (``slices == 1`` leaves it untouched)."""
    if slices == 1:
        return module
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            sliced = SlicedBatchNorm2d(child.num_features, slices, eps=child.eps, momentum=child.momentum,
                                       affine=child.affine, track_running_stats=child.track_running_stats)
            state = child.state_dict()
            sliced.load_state_dict(state)
            setattr(module, name, sliced.to(next((t.device for t in state.values()), torch.device("cpu"))))
        else:
            slice_batchnorm(child, slices)
    return module
