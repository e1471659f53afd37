"""One writer per output: a lock file held for the writer's whole lifetime.

Two writers of one run directory (a job resubmitted beside a live one, a command typed twice) interleave
their files: the log goes backwards, ``checkpoint.pt`` reappears beside a finished run, ``model.pt`` is
rewritten under an evaluation. ``part train`` therefore holds ``<run>/.lock`` and each evaluation job
``eval/.<attack>.lock`` (``part.rundir.RunPaths``) from start to end; a second writer is refused with
:class:`Locked` (the CLI's exit code 2), which names the holder's host, PID and start time.

The lock is a file created with ``O_CREAT | O_EXCL``: atomic on local and NFS (v3+) file systems alike,
where ``flock`` may be local to one node. It holds JSON (host, PID, start, last renewal, lease); a
daemon thread renews it every tenth of the lease. A holder that died without removing it (SIGKILL, a
node failure) is taken over by the next writer: on the holder's own host as soon as its process is
gone, from any host once the lease has run out unrenewed (``PART_LOCK_LEASE`` seconds, default 120:
far longer than a renewal can stall, shorter than SLURM takes to declare a node dead and requeue its job,
300 s by default). A job stopped by SIGTERM (time limit, scancel, preemption) removes its lock itself.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from part import files

LEASE_ENV = "PART_LOCK_LEASE"
DEFAULT_LEASE = 120.0
RENEWALS_PER_LEASE = 10
ATTEMPTS = 3
"""Take-overs tried before giving up: each lost one means another writer started in between."""


class Locked(RuntimeError):
    """Another live writer holds the lock; the message names it."""


def lease_seconds() -> float:
    """The lease a new lock gets: ``PART_LOCK_LEASE`` seconds, else :data:`DEFAULT_LEASE`."""
    raw = os.environ.get(LEASE_ENV, "")
    with contextlib.suppress(ValueError):
        if (lease := float(raw or DEFAULT_LEASE)) > 0:
            return lease
    raise ValueError(f"{LEASE_ENV}={raw!r}: expected the lock's lease in seconds, a number > 0")


@contextlib.contextmanager
def held(path: str | os.PathLike, purpose: str, lease: float | None = None) -> Iterator[None]:
    """Hold the lock file ``path`` while the body runs (``purpose``, e.g. "part train", tells a refused
    writer who is busy); it is removed on return and on any exception, SIGTERM's SystemExit included."""
    lock = _acquire(Path(path), purpose, lease or lease_seconds())
    try:
        yield
    finally:
        lock.release()


class _Held:
    """A lock this process created: kept open, so that renewals write to this very file and a taken-over
    lock (this process stalled past its lease) is seen as another file at ``path``, never overwritten."""

    def __init__(self, path: Path, fd: int, record: dict[str, Any]):
        self.path, self.fd, self.record = path, fd, record
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name=f"lease of {path}", daemon=True)
        self._renewer.start()

    def _ours(self) -> bool:
        try:
            return os.path.samestat(os.stat(self.path), os.fstat(self.fd))
        except FileNotFoundError:
            return False

    def _renew(self) -> None:
        while not self._stop.wait(self.record["lease_seconds"] / RENEWALS_PER_LEASE):
            if not self._ours():
                print(f"[part] warning: {self.path} was taken over by another writer (this process did not renew "
                      f"it for {self.record['lease_seconds']:g} s); two writers now share {self.path.parent}: "
                      "stop one of them", file=sys.stderr, flush=True)
                return
            self.record["renewed"] = _stamp(time.time())
            _write(self.fd, self.record)

    def release(self) -> None:
        self._stop.set()
        self._renewer.join()
        if self._ours():
            self.path.unlink(missing_ok=True)
        os.close(self.fd)


def _stamp(seconds: float) -> str:
    """UTC ISO time to the millisecond: of fixed width, so a renewal rewrites the record in place."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds")


def _write(fd: int, record: dict[str, Any]) -> None:
    """Write the record over the previous one (of equal length) and flush it to the file server, where
    writers on other hosts read it."""
    os.pwrite(fd, json.dumps(record, sort_keys=True).encode(), 0)
    os.fsync(fd)


def _acquire(path: Path, purpose: str, lease: float) -> _Held:
    files.ensure_directory(path)
    for _ in range(ATTEMPTS):
        try:
            return _create(path, purpose, lease)
        except FileExistsError:
            holder = _read(path, lease)
            if holder is None:  # removed since: its holder ended, or another writer took it over
                continue
            if stale_reason(holder) is None:
                raise Locked(_refusal(path, holder)) from None
            _take_over(path, holder)
    raise Locked(f"{path.parent}: several writers are starting here at once and {path.name} changed hands "
                 f"{ATTEMPTS} times while this one tried to take it; let one of them run")


def _create(path: Path, purpose: str, lease: float) -> _Held:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except PermissionError:
        raise files.not_writable(path) from None
    now = _stamp(time.time())
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "renewed": now,
              "lease_seconds": lease, "purpose": purpose, "token": uuid.uuid4().hex}  # tells this lock from a later one at a reused inode
    try:
        _write(fd, record)
    except BaseException:  # a full disk: leave no empty lock behind
        path.unlink()
        os.close(fd)
        raise
    return _Held(path, fd, record)


def _read(path: Path, lease: float) -> dict[str, Any] | None:
    """The lock's record with its file's identity (``text``, ``inode``); None if it is gone.

    A record read while being written (created empty an instant ago) is read again for a second; one still
    unreadable then (its writer killed before writing) counts as renewed at its file's modification time by
    an unknown holder, with ``lease``.
    """
    for _ in range(10):
        try:
            with open(path, "rb") as f:
                stat, text = os.fstat(f.fileno()), f.read()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
            datetime.datetime.fromisoformat(record["renewed"])
            return {**record, "text": text, "inode": stat}
        except (ValueError, KeyError, TypeError):
            time.sleep(0.1)
    unknown = "unknown"
    return {"host": unknown, "pid": unknown, "started": unknown, "renewed": _stamp(stat.st_mtime),
            "lease_seconds": lease, "purpose": "a writer", "text": text, "inode": stat}


def read_holder(path: str | os.PathLike) -> dict[str, Any] | None:
    """Who holds the lock file ``path`` (host, pid, started, renewed, lease_seconds, purpose), None if nobody:
    for readers that only report on a lock (``part status``), never take it."""
    return _read(Path(path), lease_seconds())


def stale_reason(holder: dict[str, Any]) -> str | None:
    """Why the holder is dead — its process gone from this host, or its lease run out unrenewed — or None
    while it may be alive (a live process here; a lease still running on another host)."""
    if holder["host"] == socket.gethostname() and isinstance(holder["pid"], int) and not _alive(holder["pid"]):
        return f"process {holder['pid']} is gone from {holder['host']}"
    renewed = datetime.datetime.fromisoformat(holder["renewed"]).timestamp()
    if (late := time.time() - renewed) > holder["lease_seconds"]:
        return (f"its lease of {holder['lease_seconds']:g} s ran out {late - holder['lease_seconds']:.0f} s ago "
                f"(last renewed {holder['renewed']})")
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _take_over(path: Path, stale: dict[str, Any]) -> None:
    """Remove the stale lock, and only it, though other writers may be taking it over at the same time.

    The lock is renamed aside (atomic: of several writers one gets it, the others find nothing) and
    checked to be the very file judged stale; one that is not (a writer took the stale one over in
    between and created this one) is linked back, which fails only if yet another writer created one
    meanwhile. The caller then creates its own with O_EXCL, as at any start.
    """
    aside = path.with_name(f"{path.name}.{uuid.uuid4().hex}.stale")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    try:
        same = os.path.samestat(os.stat(aside), stale["inode"]) and aside.read_bytes() == stale["text"]
        if not same:
            with contextlib.suppress(FileExistsError):
                os.link(aside, path)
    finally:
        aside.unlink()


def _refusal(path: Path, holder: dict[str, Any]) -> str:
    return (f"{path.parent}: {holder['purpose']} is already writing here — host {holder['host']}, PID "
            f"{holder['pid']}, started {holder['started']} (lock {path.name}, renewed {holder['renewed']}). "
            "Wait for it to end or stop it; a holder that died is taken over by the next start: on its host "
            f"once its process is gone, from another host once its lease of {holder['lease_seconds']:g} s runs out")
