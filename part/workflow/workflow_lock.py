"""Run Snakemake so that "run the same command again" is true after the workflow itself was killed.

A SIGKILLed or crashed ``snakemake`` leaves its lock in ``.snakemake/locks``, and the same command then
stops with ``LockException … --unlock``. A lock is stale when no Snakemake process is alive in the
working directory (read from ``/proc``: a process's command line and current directory). Then this
wrapper runs ``snakemake --unlock`` with the same arguments and starts the workflow; a live run's lock is
left alone, so two workflows never write the same files.

    python -m part.workflow.workflow_lock --cores 2 --configfile configs/demo.yaml     # what `make demo` runs
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path


def live_snakemake_pids(directory: Path) -> list[int]:
    """PIDs of the other Snakemake processes, and of the job scripts they run, whose current directory is
    ``directory`` (Linux /proc). An orphaned job still writes its outputs, so its workflow counts as alive."""
    pids = []
    for proc in Path("/proc").glob("[0-9]*"):
        if int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            cwd = (proc / "cwd").resolve()
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if cwd == directory and (any(arg == b"snakemake" or arg.endswith(b"/snakemake") for arg in cmdline[:3])
                                 or any(b".snakemake/scripts/" in arg for arg in cmdline)):
            pids.append(int(proc.name))  # Snakemake itself, or a job script it started that outlived it
    return pids


def stale_locks(directory: Path) -> list[Path]:
    """The lock files of ``directory`` when no Snakemake process runs there ([] where /proc is missing:
    nothing can be told, so nothing is unlocked)."""
    locks = sorted((directory / ".snakemake" / "locks").glob("*.lock"))
    if not locks or not Path("/proc/self").exists() or live_snakemake_pids(directory):
        return []
    return locks


INTERRUPTED = 130
"""The exit code of a run stopped by Ctrl-C (128 + SIGINT), as a shell reports it."""


class _Interrupted(Exception):
    """Ctrl-C arrived while a Snakemake process ran; it has ended since."""


def run_until_done(command: list[str], **kwargs) -> int:
    """Run ``command`` to its end and return its exit code; :class:`_Interrupted` once it ended if Ctrl-C came.

    Ctrl-C reaches the child as well (the terminal signals the whole foreground process group): Snakemake then
    cancels its jobs, removes their incomplete outputs and its lock. This waits for that instead of leaving it
    behind, and passes nothing on, since a second SIGINT would cut Snakemake's clean-up short.
    """
    proc = subprocess.Popen(command, **kwargs)
    interrupted = False
    while True:
        try:
            code = proc.wait()
            break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted or code == -signal.SIGINT:
        raise _Interrupted
    return code


def run(args: list[str]) -> int:
    """Unlock a stale lock, then run the workflow; Snakemake's exit code."""
    directory = Path.cwd().resolve()
    snakemake = [sys.executable, "-m", "snakemake"]
    if locks := stale_locks(directory):
        print(f"[part] {len(locks)} stale Snakemake lock(s) in {directory / '.snakemake' / 'locks'} and no "
              "Snakemake process alive here (an earlier run was killed): unlocking", file=sys.stderr)
        if code := run_until_done([*snakemake, "--unlock", *args], stdout=subprocess.DEVNULL):
            return code
    return run_until_done([*snakemake, *args])


def main(argv: list[str] | None = None) -> int:
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except (KeyboardInterrupt, _Interrupted):  # Ctrl-C, during a Snakemake process or between them
        print("[part] interrupted: run the same command again to continue (finished jobs are kept)", file=sys.stderr)
        return INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
