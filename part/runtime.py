"""Where and how a model runs: the device, bf16 autocast, synchronisation before a clock is read, eval mode."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when there is one; a CUDA device on a machine without one is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A context factory: bf16 autocast on CUDA, nothing in fp32."""
    if precision == "bf16":
        if device.type != "cuda":
            raise ValueError(f"precision bf16 needs a CUDA device, got {device}")
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels, so a wall-clock reading measures them (CUDA runs asynchronously)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block; each module's own flag comes back afterwards, even on errors.

    Per module, not ``model.train(was_training)``: a model whose parts were deliberately left in
    different modes (a frozen batch norm in a training model) gets exactly those modes back.
    """
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training
