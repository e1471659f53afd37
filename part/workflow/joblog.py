"""A workflow job's messages, its error and its cost, in the rule's ``log:`` file.

Snakemake prints a failed script's traceback on its own console only; on SLURM the user is pointed at
``logs/<rule>/….log``, which must therefore hold the error itself, not just what the job printed before it.
Every ``workflow_scripts/*.py`` runs its body inside :func:`job_log`.

The last line is the job's cost: the CPU and wall seconds of its process's whole life, interpreter start and
imports included, read from the kernel. ``results/README.md`` (``part.workflow.report.job_costs``) and
``benchmarks/workflow_cost.py`` add these lines up. They replace Snakemake's ``benchmark:`` files, which
sample every job's process tree from Snakemake's own process (reading each process's memory map once a
second, then every 30 s): on the demo it was a third of what py-spy saw Snakemake's process do, and it still
missed a quarter of the training jobs' CPU time (490 of 660 CPU-seconds counted).

Once the cost line is written the job is over, and its process only exits. The interpreter's last garbage
collection would then walk every object of torch's modules, about half a CPU-second a job (a tenth of a demo
evaluation job's life); :func:`job_log` freezes them out of it (``gc.freeze``).
"""

from __future__ import annotations

import contextlib
import gc
import re
import resource
import time
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TextIO

import psutil

from part.base import files
from part.base.errors import DeviceError


@contextlib.contextmanager
def job_log(path: str | Path, mode: str = "w", owns: Iterable[str | Path] = ()) -> Iterator[TextIO]:
    """Send stdout and stderr to ``path`` while the body runs; an exception leaving the body is written
    there (summary line, then traceback) before it propagates, so Snakemake still sees the job fail. A
    refusal (:class:`DeviceError`: the job asks for GPUs torch does not see) is its one line and exit code 2,
    as from the command line: nothing ran, there is no traceback to read.

    ``mode`` "a" keeps an earlier attempt's lines (a resumed training run). ``owns``: the job's outputs, whose
    temporaries an earlier attempt killed mid-write left beside them are deleted first (Snakemake runs one
    job per output, so the job is their only writer; it removes the outputs themselves, not these).
    """
    path = Path(path)
    for output in map(Path, owns):
        files.sweep_temporaries(output.parent, [output.name])
    files.ensure_directory(path)
    with open(path, mode) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield log
        except DeviceError as err:
            log.write(f"[part] job refused: {err}\n")
            raise SystemExit(2) from None
        except BaseException as err:
            log.write(failure(err))
            raise
        finally:
            log.write(cost_line())
            gc.freeze()  # nothing it holds is garbage worth the exit's full collection


def failure(err: BaseException) -> str:
    """What a log says about the exception that ended its job ("" for a successful ``sys.exit()``)."""
    if isinstance(err, SystemExit):  # part.training.distributed.exit_on_sigterm, or a script's own exit
        if err.code in (0, None):
            return ""
        why = "stopped by SIGTERM" if err.code == 143 else "exited"
        return f"[part] job {why} (exit code {err.code})\n"
    if isinstance(err, KeyboardInterrupt):
        return "[part] job interrupted (SIGINT)\n"
    summary = "".join(traceback.format_exception_only(type(err), err)).strip()
    return f"[part] job failed: {summary}\n\n{''.join(traceback.format_exception(err))}"


FAILURE = re.compile(r"\[part\] job (?:failed|refused|stopped|exited|interrupted)\b")
"""The line :func:`job_log` writes when an exception or a refusal ends its job (see :func:`failure`)."""


def last_failure(text: str) -> str | None:
    """The failure line of a job log's last finished attempt; None where that attempt succeeded, where none
    finished, or where a later attempt has started since (a resumed training run appends to its log, so an
    earlier attempt's failure is history once another begins)."""
    lines = text.splitlines()
    ends = [i for i, line in enumerate(lines) if COST.match(line)]
    if not ends or any(line.strip() for line in lines[ends[-1] + 1:]):
        return None
    attempt = lines[ends[-2] + 1 if len(ends) > 1 else 0:ends[-1]]
    return next((line for line in reversed(attempt) if FAILURE.match(line)), None)


COST = re.compile(r"^\[part\] job cost: ([0-9.]+) CPU-s .*?, ([0-9.]+) s wall", re.MULTILINE)


def cost_line() -> str:
    """The process's CPU time so far (its waited-for children's, torchrun's workers, included) and its age."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = own.ru_utime + children.ru_utime, own.ru_stime + children.ru_stime
    wall = time.time() - psutil.Process().create_time()
    peak_mb = max(own.ru_maxrss, children.ru_maxrss) / 1024  # Linux reports kilobytes
    return (f"[part] job cost: {user + system:.2f} CPU-s (user {user:.2f}, sys {system:.2f}), {wall:.2f} s wall, "
            f"peak memory {peak_mb:.0f} MB\n")


def job_cost(text: str) -> tuple[float, float] | None:
    """(CPU-seconds, wall seconds) a job log reports, summed over its attempts (a resumed training run
    appends to its log; every attempt's time was spent); None for a job that has not finished once."""
    attempts = [(float(cpu), float(wall)) for cpu, wall in COST.findall(text)]
    return (sum(a[0] for a in attempts), sum(a[1] for a in attempts)) if attempts else None
