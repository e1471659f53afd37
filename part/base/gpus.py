"""A workflow job's own GPUs on a machine that runs several jobs at once, and this machine's NVIDIA driver.

Snakemake's ``--resources gpu=N`` only counts: it starts jobs while their ``gpu`` resources add up to at most
N, but tells no job which GPUs are its own, so every job's torch would take GPU 0. A job that asks for GPUs
therefore takes as many *slots* first: one lock file per GPU (``part.base.lock``: created with ``O_EXCL``, removed
when the job ends or is stopped by SIGTERM, taken over by the next job once its holder's process is gone),
exported as ``CUDA_VISIBLE_DEVICES``. torch reads that variable when it initialises CUDA, at its first CUDA
call, not at ``import torch``: the slots are taken before anything touches a GPU.

The slots are the GPUs the incoming ``CUDA_VISIBLE_DEVICES`` lists, else the machine's (counted by
``nvidia-smi``). A job is left alone where its GPUs were chosen already: ``CUDA_VISIBLE_DEVICES`` listing
exactly as many GPUs as it asks for (SLURM's ``--gpus``, or the user's choice), or a SLURM job without the
variable (the scheduler confines its devices). With every slot held by a live job the job is refused at once
rather than queued: Snakemake never runs more GPU jobs than ``--resources gpu=N``, so it means N exceeds this
machine's GPUs or another workflow of the same user is using them.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from part.base import lock
from part.base.errors import DeviceError

VISIBLE = "CUDA_VISIBLE_DEVICES"
SLOTS_ENV = "PART_GPU_SLOTS_DIR"
DRIVER_FILE = Path("/proc/driver/nvidia/version")


def visible_gpus() -> list[str] | None:
    """The GPUs ``CUDA_VISIBLE_DEVICES`` lists (indices or UUIDs); None where it is unset."""
    raw = os.environ.get(VISIBLE)
    return None if raw is None else [gpu.strip() for gpu in raw.split(",") if gpu.strip()]


def _nvidia_smi(query: str) -> list[str]:
    """``nvidia-smi --query-gpu=QUERY``, one value per GPU; [] without nvidia-smi or a working driver."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def driver_version() -> str | None:
    """The NVIDIA driver's version (nvidia-smi's, else the kernel module's); None where there is no driver."""
    if versions := _nvidia_smi("driver_version"):
        return versions[0]
    try:
        text = DRIVER_FILE.read_text()
    except OSError:
        return None
    found = re.search(r"Kernel Module(?: for \S+)?\s+([0-9][0-9.]*)", text)
    return found.group(1) if found else text.splitlines()[0].strip() if text.strip() else None


def slots_dir() -> Path:
    """Where the slots' lock files live: ``PART_GPU_SLOTS_DIR``, else a directory of this user's in the
    system's temporary directory (one per machine, as the GPUs are)."""
    return Path(os.environ.get(SLOTS_ENV) or Path(tempfile.gettempdir()) / f"part-gpu-slots-{os.getuid()}")


def machine_gpus() -> list[str]:
    """This machine's GPUs as CUDA numbers them, ``0`` … ``n-1`` (nvidia-smi's count; [] without it)."""
    return [str(index) for index in range(len(_nvidia_smi("index")))]


def _pool(count: int) -> list[str] | None:
    """The GPUs a job asking for ``count`` chooses among; None where it asks for none, where its GPUs are
    assigned already, or where there are fewer than it asks for."""
    visible = visible_gpus()
    assigned = len(visible) == count if visible is not None else "SLURM_JOB_ID" in os.environ
    if count < 1 or assigned:
        return None
    pool = machine_gpus() if visible is None else visible
    return pool if len(pool) >= count else None


def _lock_name(gpu: str) -> str:
    return "gpu" + re.sub(r"[^A-Za-z0-9_.-]", "_", gpu) + ".lock"  # a UUID (GPU-…, MIG-…) is a file name as it is


@contextlib.contextmanager
def slots(count: int, purpose: str) -> Iterator[None]:
    """Hold ``count`` GPU slots of this machine while the body runs, exported as ``CUDA_VISIBLE_DEVICES``
    (its previous value comes back afterwards). ``purpose`` (e.g. "rule train (dataset=…)") names the job in
    refusals and in the lock files.

    Nothing is taken for a job that asks for no GPU, whose GPUs are already assigned, or where there are fewer
    GPUs to choose among than it asks for (none counted without nvidia-smi): what torch sees then decides
    (``part.base.runtime.require_gpus``, which refuses a job that sees fewer GPUs than it asks for).
    """
    pool = _pool(count)
    if pool is None:
        yield
        return
    directory = slots_dir()
    with contextlib.ExitStack() as held:
        taken: list[str] = []
        for gpu in pool:
            if len(taken) == count:
                break
            with contextlib.suppress(lock.Locked):
                held.enter_context(lock.held(directory / _lock_name(gpu), purpose))
                taken.append(gpu)
        if len(taken) < count:
            raise DeviceError(
                f"{purpose} asks for {count} GPU(s), but {len(pool) - len(taken)} of the {len(pool)} GPUs here "
                f"({', '.join(pool)}) are held by running jobs (lock files gpu*.lock in {directory}): more GPU jobs "
                f"run on this machine than it has GPUs; give snakemake --resources gpu=N with N at most {len(pool)}, "
                "or wait for the other workflow's jobs to end")
        before = os.environ.get(VISIBLE)
        os.environ[VISIBLE] = ",".join(taken)
        try:
            yield
        finally:
            if before is None:
                os.environ.pop(VISIBLE, None)
            else:
                os.environ[VISIBLE] = before

