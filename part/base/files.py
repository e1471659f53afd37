"""Writing files so that nothing is ever half-written.

Every file a run produces goes through a temporary file in the same directory followed by
``os.replace``: a job killed at any instant (SLURM preemption, Ctrl-C) leaves either the old
file or the new one, never a truncated one.
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable


class DiskFullError(OSError):
    """A write ran out of space; the file it would have replaced is untouched."""


def _temporary_pattern(name: str) -> re.Pattern[str]:
    """The names :func:`atomic_write` gives the temporaries of ``name``: ``.NAME.<8 random chars>.tmp``."""
    return re.compile(rf"\.{re.escape(name)}\.[A-Za-z0-9_]{{8}}\.tmp")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` and move ``tmp`` onto ``path`` only once it has succeeded.

    A process killed by SIGKILL cannot remove its temporary: :func:`sweep_temporaries` does that when
    the directory's owner starts again. Running out of space raises :class:`DiskFullError`. The file gets
    the mode a plain ``open`` would give it (0666 less the umask), not the temporary's 0600.
    """
    path = Path(path)
    ensure_directory(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except PermissionError:
        raise not_writable(path) from None
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the owner's group
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


def ensure_directory(path: Path) -> list[Path]:
    """Create the directory of the file ``path`` (and its parents), with errors that name both; the directories
    it created, deepest first, so that a refused writer can remove them again (:func:`remove_if_empty`)."""
    missing = [d for d in [path.parent, *path.parent.parents] if not d.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise NotADirectoryError(f"{path.parent}: exists and is not a directory; cannot write {path.name} "
                                 "there (choose another output directory)") from None
    except PermissionError:
        raise PermissionError(f"{path.parent}: no permission to create this directory for {path.name}") from None
    return missing


def remove_if_empty(directories: list[Path]) -> None:
    """Remove ``directories`` (deepest first) while they are empty: what a writer created and wrote nothing into."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:  # not empty (or gone): whatever is above it is in use too
            return


def file_in_the_way(directory: str | os.PathLike) -> Path | None:
    """The first existing component of the path ``directory`` that is not a directory (so the directory cannot
    exist there), None if there is none."""
    directory = Path(directory)
    for component in [*reversed(directory.parents), directory]:
        if component.exists() and not component.is_dir():
            return component
    return None


def not_writable(path: Path) -> PermissionError:
    """The error for a file that cannot be created in its (existing) directory."""
    return PermissionError(f"{path.parent}: not writable; cannot write {path.name} there")


def _umask() -> int:
    """The process's umask. ``os.umask`` reads it only by setting another: the most restrictive one is set for
    that instant, so a file another thread creates meanwhile is never more open than its owner asked."""
    current = os.umask(0o777)
    os.umask(current)
    return current


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


def read_utf8(path: Path, remedy: str, error: type[ValueError] = ValueError) -> str:
    """A text file's content; a missing file is a ``FileNotFoundError``, bytes that are not UTF-8 an ``error``
    naming the file, the byte and what to do (``remedy``), never a bare ``UnicodeDecodeError``."""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except UnicodeDecodeError as err:
        raise error(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); {remedy}") from None


def read_json_object(path: str | os.PathLike, remedy: str = "delete it and rerun the step that writes it") -> dict[str, Any]:
    """The JSON object in ``path``; a file that is missing, not UTF-8, not JSON (truncated, corrupted) or not an
    object is a ``ValueError`` (``FileNotFoundError``) that names it and says what to do (``remedy``)."""
    path = Path(path)
    try:
        obj = json.loads(read_utf8(path, remedy))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); it is truncated or corrupted: {remedy}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: holds a JSON {type(obj).__name__}, expected an object; {remedy}")
    return obj


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
