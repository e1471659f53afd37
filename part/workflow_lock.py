"""Run Snakemake so that "run the same command again" is true after the workflow itself was killed.

A SIGKILLed or crashed ``snakemake`` leaves its lock in ``.snakemake/locks``, and the same command then
stops with ``LockException … --unlock``. A lock is stale when no Snakemake process is alive in the
working directory (read from ``/proc``: a process's command line and current directory). Then this
wrapper runs ``snakemake --unlock`` with the same arguments and starts the workflow; a live run's lock is
left alone, so two workflows never write the same files.

    python -m part.workflow_lock --cores 2 --configfile configs/demo.yaml     # what `make demo` runs
"""

from __future__ import annotations

import os
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    directory = Path.cwd().resolve()
    snakemake = [sys.executable, "-m", "snakemake"]
    if locks := stale_locks(directory):
        print(f"[part] {len(locks)} stale Snakemake lock(s) in {directory / '.snakemake' / 'locks'} and no "
              "Snakemake process alive here (an earlier run was killed): unlocking", file=sys.stderr)
        subprocess.run([*snakemake, "--unlock", *args], check=True, stdout=subprocess.DEVNULL)
    return subprocess.run([*snakemake, *args]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
