"""Writing results so that nothing is ever half-written, and recording where they came from.

Every file a run produces goes through a temporary file in the same directory followed by
``os.replace``: a job killed at any instant (SLURM preemption, Ctrl-C) leaves either the old
file or the new one, never a truncated one.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import platform
import re
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

import torch


class DiskFullError(OSError):
    """A write ran out of space; the file it would have replaced is untouched."""


def _temporary_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`atomic_write` gives the temporaries of ``name``: ``.NAME.<8 random chars>.tmp``."""
    return re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` and move ``tmp`` onto ``path`` only once it has succeeded.

    A process killed by SIGKILL cannot remove its temporary: :func:`sweep_temporaries` does that when
    the directory's owner starts again. Running out of space raises :class:`DiskFullError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"{path.parent}: exists and is not a directory; cannot write {path.name} "
                                 "there (choose another output directory)") from None
    except PermissionError:
        raise PermissionError(f"{path.parent}: no permission to create this directory for {path.name}") from None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError:
        raise PermissionError(f"{path.parent}: not writable; cannot write {path.name} there") from None
    os.close(fd)
    tmp = Path(tmp)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if _out_of_space(err):
            raise DiskFullError(errno.ENOSPC, f"{path.parent}: the disk is full; {path.name} was not written "
                                              "(the previous version, if any, is kept): free space and rerun") from err
        raise
    return path


def _out_of_space(err: BaseException) -> bool:
    """ENOSPC, or torch's zip writer failing on a short write (its message names no errno)."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, RuntimeError) and "unexpected pos" in str(err)


def sweep_temporaries(directory: str | os.PathLike, names: Iterable[str]) -> list[Path]:
    """Delete the temporaries :func:`atomic_write` left for the files ``names`` of ``directory`` (a writer
    killed mid-write); only the owner of those files may call this, since it cannot tell a live write."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    patterns = [_temporary_pattern(name) for name in names]
    stale = [p for p in directory.iterdir() if p.is_file() and any(pat.fullmatch(p.name) for pat in patterns)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """``torch.load`` restricted to tensors and plain containers, with an error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" in str(err):  # torch's refusal of a GLOBAL outside the allow-list
            raise ValueError(f"{path}: refused — the file holds Python objects beyond tensors and plain "
                             "containers (code that loading would run); this pipeline never writes such files. "
                             "Delete it and regenerate it, or load it yourself only if you trust its source") from None
        raise ValueError(f"{path}: cannot be read as a torch file ({err}); it is corrupted or truncated: delete "
                         "it and regenerate it") from err
    except Exception as err:  # torch raises RuntimeError/EOFError for damaged files
        raise ValueError(f"{path}: cannot be read as a torch file ({type(err).__name__}: {err}); "
                         "it is corrupted or truncated: delete it and regenerate it") from err


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


def environment() -> dict[str, Any]:
    """Versions and hardware a result was produced with, for ``run.json`` / ``metrics.json``."""
    from importlib import metadata

    versions = {}
    for dist in ("part-repro", "torch", "torchvision", "grad-cam", "pyautoattack", "numpy"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "versions": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda": torch.version.cuda,
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else cpu_name(),
        "git_revision": git_revision(),
    }
