"""One writer per output: a lock file held for the writer's whole lifetime.

Two writers of one run directory (a job resubmitted beside a live one, a command typed twice) interleave
their files: the log goes backwards, ``checkpoint.pt`` reappears beside a finished run, ``model.pt`` is
rewritten under an evaluation. ``part train`` therefore holds ``<run>/.lock`` and each evaluation job
``eval/.<attack>.lock`` (``part.base.rundir.RunPaths``) from start to end; a second writer is refused with
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

from part.base import files
from part.base.errors import echo

LEASE_ENV = "PART_LOCK_LEASE"
DEFAULT_LEASE = 120.0
RENEWALS_PER_LEASE = 10
ATTEMPTS = 3
"""Take-overs tried before giving up: each lost one means another writer started in between."""


class Locked(RuntimeError):
    """Another live writer holds the lock; the message names it."""


MAX_LEASE = 7 * 24 * 3600.0
"""The longest lease accepted: a week, beyond any job's time limit (and within what a thread can wait)."""


def lease_seconds() -> float:
    """The lease a new lock gets: ``PART_LOCK_LEASE`` seconds, else :data:`DEFAULT_LEASE`."""
    raw = os.environ.get(LEASE_ENV, "")
    with contextlib.suppress(ValueError):
        if 0 < (lease := float(raw or DEFAULT_LEASE)) <= MAX_LEASE:  # NaN fails both comparisons
            return lease
    raise ValueError(f"{LEASE_ENV}={echo(raw)}: expected the lock's lease in seconds, a number > 0 and at most "
                     f"{MAX_LEASE:g} (a week)")


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

    def __init__(self, path: Path, fd: int, record: dict[str, Any], created: list[Path]):
        self.path, self.fd, self.record, self.created = path, fd, record, created
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
        files.remove_if_empty(self.created)  # a writer refused before writing leaves no directory behind


def _stamp(seconds: float) -> str:
    """UTC ISO time to the millisecond: of fixed width, so a renewal rewrites the record in place."""
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds")


def _write(fd: int, record: dict[str, Any]) -> None:
    """Write the record over the previous one (of equal length) and flush it to the file server, where
    writers on other hosts read it."""
    os.pwrite(fd, json.dumps(record, sort_keys=True).encode(), 0)
    os.fsync(fd)


def _acquire(path: Path, purpose: str, lease: float) -> _Held:
    created = files.ensure_directory(path)
    try:
        return _contend(path, purpose, lease, created)
    except BaseException:
        files.remove_if_empty(created)
        raise


def _contend(path: Path, purpose: str, lease: float, created: list[Path]) -> _Held:
    for _ in range(ATTEMPTS):
        try:
            return _create(path, purpose, lease, created)
        except FileExistsError:
            holder = _read(path, lease)
            if holder is None:  # removed since: its holder ended, or another writer took it over
                continue
            if stale_reason(holder) is None:
                raise Locked(_refusal(path, holder)) from None
            _take_over(path, holder)
    raise Locked(f"{path.parent}: several writers are starting here at once and {path.name} changed hands "
                 f"{ATTEMPTS} times while this one tried to take it; let one of them run")


def _create(path: Path, purpose: str, lease: float, created: list[Path]) -> _Held:
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
    return _Held(path, fd, record, created)


def _read(path: Path, lease: float) -> dict[str, Any] | None:
    """The lock's record with its file's identity (``text``, ``inode``); None if it is gone.

    A record read while being written (created empty an instant ago) is read again for a second; one still
    not a record this module writes then (its writer killed before writing, a file made by hand or damaged)
    counts as renewed at its file's modification time by an unknown holder, with ``lease``: stale once that
    lease has run out, never a crash.
    """
    for _ in range(10):
        try:
            with open(path, "rb") as f:
                stat, text = os.fstat(f.fileno()), f.read()
        except FileNotFoundError:
            return None
        with contextlib.suppress(ValueError):
            if _is_record(record := json.loads(text)):
                return {**record, "text": text, "inode": stat}
        time.sleep(0.1)
    unknown = "unknown"
    return {"host": unknown, "pid": unknown, "started": unknown, "renewed": _stamp(stat.st_mtime),
            "lease_seconds": lease, "purpose": "a writer", "text": text, "inode": stat, "foreign": True}


RECORD_TYPES = {"host": str, "pid": int, "started": str, "renewed": str, "purpose": str, "lease_seconds": (int, float)}


MAX_PID = 2**22
"""Linux's largest process ID: a larger one (or one <= 0, which ``kill`` reads as a process group) is no PID."""


def _is_record(record: Any) -> bool:
    """Whether ``record`` is a lock record as :func:`_create` writes it: every key, of its type, a PID, a lease
    that is a finite number > 0, a renewal time that parses and is not later than a lease from now (clocks of
    hosts differ by less)."""
    if not isinstance(record, dict) or any(not isinstance(record.get(key), kind) or isinstance(record.get(key), bool)
                                           for key, kind in RECORD_TYPES.items()):
        return False
    if not (0 < record["pid"] <= MAX_PID and 0 < record["lease_seconds"] <= MAX_LEASE):
        return False
    try:
        renewed = datetime.datetime.fromisoformat(record["renewed"]).timestamp()
    except (ValueError, OverflowError, OSError):
        return False
    return renewed <= time.time() + record["lease_seconds"]


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
    """Who holds the lock, and how to get out when that holder is gone for good."""
    lease = holder["lease_seconds"]
    expires = _stamp(datetime.datetime.fromisoformat(holder["renewed"]).timestamp() + lease)
    if holder.get("foreign"):
        who = (f"{path.name} is not a lock record this pipeline wrote (empty, damaged or made by hand), so it is held "
               f"by an unknown writer until its file is {lease:g} s old, at {expires}")
        gone = f"if no part command writes to {path.parent} now, delete {path}"
    else:
        who = (f"{holder['purpose']} is already writing here — host {holder['host']}, PID {holder['pid']}, started "
               f"{holder['started']} (lock {path.name}, renewed {holder['renewed']})")
        gone = (f"if PID {holder['pid']} on host {holder['host']} is gone and nothing else writes to {path.parent}, "
                f"delete {path} to go on at once")
    return (f"{path.parent}: {who}. Wait for it to end or stop it; a holder that died is taken over by the next start: "
            f"on its host once its process is gone, from another host once its lease of {lease:g} s runs out "
            f"(at {expires}); {gone}")
