"""Which sources made a workflow's outputs: a hash of the code and configs, kept as ``results/.fingerprint``.

A check that reads a finished run (``make check-demo``) must refuse outputs that other sources made, or an edit
to ``part/`` would pass against last week's tables. The workflow's last job (``rule fingerprint``) records the
hash of every file under :data:`SOURCES`; the check recomputes it. Results, logs and bytecode are not sources.

Snakemake reruns only the jobs it sees change, so a partial rerun after an edit would leave older outputs
behind a new hash: the last job records ``stale`` instead whenever an output is older than a source file, and
``make demo`` reruns the whole workflow (``--forceall``) whenever the recorded value is not the current hash.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from part.base import files

SOURCES = ("part", "rules", "workflow_scripts", "Snakefile", "configs")
"""What makes a workflow's outputs, relative to the checkout's root (the Snakefile's directory)."""

FILE_NAME = ".fingerprint"
STALE = "stale"


def source_files(root: str | os.PathLike) -> list[Path]:
    """The files under :data:`SOURCES`, sorted, without Python's bytecode caches."""
    root = Path(root)
    found = []
    for name in SOURCES:
        path = root / name
        candidates = [path] if path.is_file() else path.rglob("*")
        found += [p for p in candidates if p.is_file() and "__pycache__" not in p.relative_to(root).parts]
    return sorted(found)


def source_fingerprint(root: str | os.PathLike) -> str:
    """The sha256 of every source file's path (relative to ``root``) and bytes: a rename or an added file
    changes it too."""
    digest = hashlib.sha256()
    for path in source_files(root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def certify(outputs: Iterable[str | os.PathLike], root: str | os.PathLike) -> str:
    """The current fingerprint when every output is newer than every source file; otherwise ``stale``, with
    the oldest output and the newest source (outputs an earlier version made, which Snakemake did not rerun)."""
    newest = max(source_files(root), key=lambda p: p.stat().st_mtime)
    oldest = min((Path(p) for p in outputs), key=lambda p: p.stat().st_mtime, default=None)
    if oldest is not None and oldest.stat().st_mtime < newest.stat().st_mtime:
        return f"{STALE}: {oldest} is older than {newest.relative_to(root)}"
    return source_fingerprint(root)


def write_fingerprint(path: str | os.PathLike, outputs: Iterable[str | os.PathLike], root: str | os.PathLike) -> Path:
    """Record :func:`certify`'s verdict on ``outputs`` in ``path`` (atomically)."""
    return files.write_text(path, certify(outputs, root) + "\n")


def recorded(results_dir: str | os.PathLike) -> str | None:
    """The fingerprint a run recorded in ``results_dir``; None when it recorded none."""
    try:
        return (Path(results_dir) / FILE_NAME).read_text().strip()
    except FileNotFoundError:
        return None


def stale_reason(results_dir: str | os.PathLike, root: str | os.PathLike) -> str | None:
    """Why the outputs in ``results_dir`` are not the current sources' (one message that says how to refresh
    them); None when they are."""
    found = recorded(results_dir)
    if found == source_fingerprint(root):
        return None
    why = (f"no {FILE_NAME}: the workflow did not finish here" if found is None else found if found.startswith(STALE)
           else f"{FILE_NAME} is of other sources than the current {', '.join(SOURCES)}")
    return f"{Path(results_dir)}: outputs are stale ({why}); run `make demo` to refresh them"


def main(argv: list[str] | None = None) -> int:
    """``python -m part.workflow.fingerprint RESULTS``: prints ``--forceall`` when RESULTS holds outputs recorded as other
    sources' (Snakemake alone would keep them), else nothing; ``make demo`` passes it on to Snakemake."""
    p = argparse.ArgumentParser(prog="python -m part.workflow.fingerprint")
    p.add_argument("results_dir", type=Path)
    p.add_argument("--root", type=Path, default=Path.cwd(), help="the checkout (default: the current directory)")
    args = p.parse_args(argv)
    found = recorded(args.results_dir)
    if found is not None and found != source_fingerprint(args.root):
        print(f"[part] {args.results_dir / FILE_NAME}: made by other sources; rerunning every job", file=sys.stderr)
        print("--forceall")
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
