"""Where and how a model runs: the device, bf16 autocast, synchronisation before a clock is read, eval mode,
and the host allocator's settings for a training process."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import sys
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
    """A context factory: bf16 autocast on the device, nothing in fp32.

    bf16 is the GPU path; on the CPU it is its twin (the same autocast rules, CPU kernels), there so that
    the bf16 code paths are exercised and tested without a GPU: fast only where the CPU has bf16
    instructions (AVX512-BF16, AMX), slower than fp32 elsewhere.
    """
    if precision == "bf16":
        if device.type not in ("cuda", "cpu"):
            raise ValueError(f"precision bf16 needs a CUDA device or the CPU, got {device}")
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
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


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20
"""Host allocations below this come from the heap, not from a fresh ``mmap`` each (glibc's own ceiling
for its dynamic threshold, 32 MiB on 64-bit)."""
TRIM_THRESHOLD = 256 << 20
"""Free memory the heap keeps, instead of handing it back to the system at every ``free``."""


@functools.cache
def retain_freed_memory() -> bool:
    """Let glibc's ``malloc`` keep and reuse freed host memory; whether the setting took (once per process).

    A CPU training step allocates and frees the same few MiB-sized activations and gradients, batch after
    batch. With glibc's default thresholds the heap returns them to the system (trimming, ``munmap``) and
    the next batch faults them back in page by page, zero-filled: 10-60 thousand page faults per digits
    epoch, most in the validation pass (its 180-image batch), whose CPU time they inflated by 10-35 %
    (2-4 % of an epoch with validation). Keeping the memory removes the faults and changes no number,
    only where buffers come from. Elsewhere than glibc (macOS; musl ignores these) it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) & bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
