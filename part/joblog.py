"""A workflow job's messages, and its error, in the rule's ``log:`` file.

Snakemake prints a failed script's traceback on its own console only; on SLURM the user is pointed at
``logs/<rule>/….log``, which must therefore hold the error itself, not just what the job printed before it.
Every ``workflow_scripts/*.py`` runs its body inside :func:`job_log`.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from part import files


@contextlib.contextmanager
def job_log(path: str | Path, mode: str = "w") -> Iterator[TextIO]:
    """Send stdout and stderr to ``path`` while the body runs; an exception leaving the body is written
    there (summary line, then traceback) before it propagates, so Snakemake still sees the job fail.

    ``mode`` "a" keeps an earlier attempt's lines (a resumed training run).
    """
    path = Path(path)
    files.ensure_directory(path)
    with open(path, mode) as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            yield log
        except BaseException as err:
            log.write(failure(err))
            raise


def failure(err: BaseException) -> str:
    """What a log says about the exception that ended its job ("" for a successful ``sys.exit()``)."""
    if isinstance(err, SystemExit):  # part.distributed.exit_on_sigterm, or a script's own exit
        if err.code in (0, None):
            return ""
        why = "stopped by SIGTERM" if err.code == 143 else "exited"
        return f"[part] job {why} (exit code {err.code})\n"
    if isinstance(err, KeyboardInterrupt):
        return "[part] job interrupted (SIGINT)\n"
    summary = "".join(traceback.format_exception_only(type(err), err)).strip()
    return f"[part] job failed: {summary}\n\n{''.join(traceback.format_exception(err))}"
