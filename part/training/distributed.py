"""One training run on several GPUs of a node (torchrun + DistributedDataParallel), with one process's results.

Why: a WRN-34-10 run on TinyImageNet takes about a GPU-day; spreading it over the GPUs of a node shortens
it, but it must stay the *same experiment* as a single-process run of the same config — same global batch,
same BatchNorm statistics, same images, crops, flips, attack starts and ε-maps — or a table would mix two
kinds of results. Launched with ``python -m torch.distributed.run --standalone --nproc_per_node N -m
part.cli train ...`` (see :func:`torchrun_command`), each process trains rows of every global batch:

* **data and randomness**: every process draws the epoch's shuffle, crops, flips and the attack's random
  starts for the *whole* global batch of ``batch_size`` images from the same seeded generators, and keeps
  its contiguous rows (:func:`part.data.prepared.split_rows`; :class:`part.attacks.pgd.RowsOf`). So each image gets
  exactly the draws it gets in one process, and a run is reproducible and resumable as before.
* **loss**: DistributedDataParallel averages the processes' gradients; each process weights its loss by
  ``world_size × its rows / global rows`` (:func:`loss_weight`), so the average is the gradient of the
  global batch's mean loss even when the last batch does not split evenly.
* **BatchNorm**: in training mode normalised with the statistics of the global batch
  (``nn.SyncBatchNorm`` on CUDA; on the CPU, where it refuses to run, :class:`GlooSyncBatchNorm`: the same
  statistics with differentiable all-reduces over gloo). Attacks and CAMs run the model in eval mode, image
  by image, so they need no communication.
* **ε-maps**: each process computes the masks of its rows of every refresh batch; :func:`assemble` puts
  them together in every process, since the next shuffle may send any image to any process, which then
  attacks it with that image's own map (the ``own`` pairing, as in one process).
* **statistics**: loss, accuracy and budget sums are added over the processes once per epoch (:func:`sums`).
* **files**: only rank 0 writes (``checkpoint.pt``, ``log.jsonl``, ``model.pt``, ``run.json``, all atomic);
  every process resumes from the same checkpoint.

So a 2-process run computes what a 1-process run computes, up to floating-point summation order
(``tests/test_distributed.py`` compares the weights). Adversarial training amplifies such last-bit
differences once a near-zero input gradient flips the sign of an attack step, so over many epochs the two
agree in accuracy, not bitwise; a multi-process run is itself reproducible and resumes bit-identically.
The backend is nccl for CUDA and gloo for the CPU.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def exit_on_sigterm() -> None:
    """Turn SIGTERM (SLURM's time limit, scancel, preemption; torchrun stopping its workers) into a normal exit
    with code 143, so ``finally`` blocks and context managers run: temporary files go, child processes stop."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0, or the only process)."""
    return rank() == 0


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join the process group torchrun describes (it sets ``LOCAL_RANK``); nothing for a plain process.

    nccl for a CUDA device (each process on the GPU ``LOCAL_RANK``), gloo for the CPU. A torchrun launch of
    one process joins a group of one, so its training takes the multi-process path (synchronised batch
    norm, DistributedDataParallel, the collectives) — the way to test that path on a single GPU. The group
    is torn down on the way out, after a barrier, so no process leaves while rank 0 still writes the files.
    """
    if "LOCAL_RANK" not in os.environ and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        yield
        return
    if device.type == "cuda":
        if device.index is not None:
            raise ValueError(f"device {device} would put every process on one GPU; use device: cuda or auto "
                             "with several processes (each takes the GPU LOCAL_RANK)")
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's device: its own GPU (set by :func:`process_group`) in a multi-process CUDA run."""
    if device.type == "cuda" and dist.is_initialized():
        return torch.device("cuda", torch.cuda.current_device())
    return device


def check_split(n_images: int, batch_size: int, source: str) -> None:
    """Every global batch (the last one included) must give each process at least one image."""
    smallest = n_images % batch_size or batch_size
    if smallest < world_size():
        raise ValueError(f"{source}: key 'batch_size': a global batch of {smallest} images "
                         f"cannot be split across {world_size()} processes; change batch_size or the GPU count")


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) with a gradient: each process's loss depends on every process's input, so the
    gradient reaching an input is the sum over processes of the gradients of their losses."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlooSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """What ``nn.SyncBatchNorm`` computes, for the CPU (gloo), where it refuses to run (and DDP refuses it).

    In training mode it normalises with the mean and (biased) variance of the global batch, all-reduced with
    differentiable collectives so that gradients flow across processes as in ``nn.SyncBatchNorm``, and
    updates the running statistics as ``nn.BatchNorm2d`` does. In eval mode it is a plain BatchNorm.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        totals = _SumOverProcesses.apply(torch.cat([x.sum(dims), x.new_full((1,), x.numel() / x.shape[1])]))
        n = totals[-1].detach()
        mean = totals[:-1] / n
        centred = x - mean.view(shape)
        var = _SumOverProcesses.apply(centred.square().sum(dims)) / n
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1))
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        return out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.item()
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased_var, alpha=factor)


def synchronize_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """``model`` with batch statistics over the global batch when several processes train it:
    ``nn.SyncBatchNorm`` on CUDA, :class:`GlooSyncBatchNorm` on the CPU; a process outside any group keeps
    its model."""
    if not dist.is_initialized():
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _to_gloo_sync(model)


def _to_gloo_sync(module: nn.Module) -> nn.Module:
    """Every BatchNorm of ``module`` replaced by a :class:`GlooSyncBatchNorm` with its parameters and buffers."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        synced = GlooSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        return synced.to(module.running_mean.device).train(module.training)
    for name, child in module.named_children():
        module.add_module(name, _to_gloo_sync(child))
    return module


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel in a process group (torchrun), else itself."""
    if not dist.is_initialized():
        return module
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def loss_weight(rows: int, global_rows: int) -> float:
    """The factor on a process's mean loss that makes DDP's gradient average the global batch's gradient."""
    return rows * world_size() / global_rows


def sums(*values: torch.Tensor | float) -> list[float]:
    """The values added over all processes (one all-reduce), as Python floats."""
    device = next((v.device for v in values if torch.is_tensor(v)), torch.device("cpu"))
    stacked = torch.stack([torch.as_tensor(v, device=device, dtype=torch.float64) for v in values])
    if world_size() > 1:
        dist.all_reduce(stacked)
    return stacked.tolist()


def assemble(parts: list[torch.Tensor], positions: list[slice], total: int) -> torch.Tensor:
    """Rows computed by every process, put together in every process: ``parts[i]`` holds rows ``positions[i]``
    of a ``total``-row result (one process: its parts in order, which cover all rows)."""
    local = torch.cat(parts)
    if world_size() == 1:
        return local
    full = torch.zeros((total, *local.shape[1:]), dtype=torch.uint8, device=local.device)
    for part, position in zip(parts, positions):
        full[position] = part
    dist.all_reduce(full)  # each row was filled by exactly one process, so the sum is that process's row
    return full.to(local.dtype)


def torchrun_command(nproc: int, config: str | Path, out_dir: str | Path) -> list[str]:
    """``part train`` as ``nproc`` processes on this node (torchrun picks a free rendezvous port)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "part.cli", "train", "--config", str(config), "--out", str(out_dir)]
