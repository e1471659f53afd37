"""Where a result came from: versions, hardware and the code's git revision, recorded in every result file."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any



def git_revision(cwd: str | os.PathLike | None = None) -> str | None:
    """The commit of the checkout the code runs from (with ``-dirty`` when it has local edits)."""
    cwd = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return rev + ("-dirty" if dirty else "")


def cpu_name() -> str:
    """The CPU model (``platform.processor()`` is empty on most Linux systems)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(hardware: bool = True) -> dict[str, Any]:
    """Versions and hardware a result was produced with, for ``run.json`` / ``eval/*.json`` / ``metrics.json``.

    ``hardware=False`` leaves out torch's CUDA build and the device name, which need torch imported:
    for the jobs that compute nothing (the metrics merge), whose inputs record their own hardware.
    """
    from importlib import metadata

    versions = {}
    for dist in ("part-repro", "torch", "torchvision", "grad-cam", "pyautoattack", "torchattacks", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    env = {"versions": versions, "python": platform.python_version(), "platform": platform.platform(),
           "git_revision": git_revision()}
    return {**env, **_hardware()} if hardware else env


def _hardware() -> dict[str, Any]:
    import torch  # here, so that the torch-free jobs can record their environment without paying for it

    return {"cuda": torch.version.cuda,
            "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name()}
