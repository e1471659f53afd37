"""Where and how a model runs: the device (a workflow job's GPUs included), bf16 autocast, synchronisation
before a clock is read, eval mode, and the host allocator's settings for a training process."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from part.base import gpus
from part.base.config import RunConfig
from part.base.errors import DeviceError


def resolve_device(name: str, source: str) -> torch.device:
    """``auto`` is CUDA when torch sees a GPU, else the CPU; a name that is not a device, or a GPU torch does not
    see here, is refused (:class:`DeviceError`, naming ``source``: the flag, or the config file and its key)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise DeviceError(f"{source}: got {name!r}, expected auto, cpu, cuda or cuda:N (N the index of a GPU)")
    if device.type == "cuda" and (device.index or 0) >= (seen := torch.cuda.device_count()):
        gpus_here = "" if not seen else "cuda:0, " if seen == 1 else f"cuda:0 … cuda:{seen - 1}, "
        raise DeviceError(f"{source}: got {name!r}, but {_seen(seen)}; expected {gpus_here}cpu or auto on this "
                          "machine, or run where torch sees the GPU (docs/gpu.md)")
    return device


def config_device(cfg: RunConfig) -> torch.device:
    """The device of a run config's key ``device``."""
    return resolve_device(cfg.device, f"{cfg.source}: key 'device'")


def require_gpus(count: int, job: str, stage: str) -> None:
    """Refuse a workflow job that asks for ``count`` GPUs (``resources.<stage>.gpu``) where torch sees fewer: it
    would otherwise run on the CPU (``device: auto``) or fail later on a missing device, hours into a queue."""
    if (seen := torch.cuda.device_count()) < count:
        raise DeviceError(f"{job} asks for {count} GPU(s) (resources.{stage}.gpu in the workflow config), but "
                          f"{_seen(seen)}; run it where torch sees its GPUs (docs/gpu.md), or set "
                          f"resources.{stage}.gpu: 0 to run it on the CPU")


def _seen(count: int) -> str:
    """How many GPUs torch sees, and what decides it: torch's CUDA build, the driver, CUDA_VISIBLE_DEVICES."""
    build = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"
    visible = os.environ.get(gpus.VISIBLE)
    return (f"torch sees {count or 'no'} CUDA device{'s' if count > 1 else ''} here (torch {torch.__version__}, "
            f"{build}; NVIDIA driver {gpus.driver_version() or 'not found'}; CUDA_VISIBLE_DEVICES"
            f"{' unset' if visible is None else '=' + repr(visible)})")


@contextlib.contextmanager
def job_gpus(job: Any, stage: str | None) -> Iterator[None]:
    """A workflow job's GPUs (``job`` is the script's ``snakemake`` object, ``stage`` the ``resources`` block it
    asks them from, ``part.base.grid.compute_resource``): its own slots on this machine (``part.base.gpus``), then checked
    against what torch sees, so a job that asks for a GPU never runs on the CPU."""
    count = getattr(job.resources, "gpu", 0)
    name = f"rule {job.rule} ({', '.join(f'{key}={value}' for key, value in job.wildcards.items())})"
    with gpus.slots(count, name):
        if count:
            require_gpus(count, name, stage)
        yield


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
