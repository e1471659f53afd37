"""A run's directory: the files training writes into it, and its per-epoch log.

Kept apart from the training loop (and free of torch) so that evaluation, figures and tables find a
run's files without importing the trainer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from part.base.vocabulary import CHECKPOINTS

CHECKPOINT_FILES = dict(zip(CHECKPOINTS, ("model.pt", "best.pt", "ema.pt")))
"""The weights a run keeps, by the name ``evaluation.checkpoint`` and ``part evaluate --checkpoint`` use:
the final epoch's (the paper's), the best robust-validation epoch's, the weight average's."""


def eval_dir_name(checkpoint: str) -> str:
    """Where a checkpoint's per-attack results go: ``eval/`` for the final weights, ``eval_<name>/`` else."""
    return "eval" if checkpoint == "last" else f"eval_{checkpoint}"


def metrics_name(checkpoint: str) -> str:
    """A checkpoint's merged results: ``metrics.json`` for the final weights, ``metrics_<name>.json`` else."""
    return "metrics.json" if checkpoint == "last" else f"metrics_{checkpoint}.json"


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def best(self) -> Path:
        return self.root / CHECKPOINT_FILES["best"]

    @property
    def ema(self) -> Path:
        return self.root / CHECKPOINT_FILES["ema"]

    def weights(self, checkpoint: str) -> Path:
        if checkpoint not in CHECKPOINT_FILES:
            raise ValueError(f"checkpoint {checkpoint!r}: expected one of {', '.join(CHECKPOINT_FILES)}")
        return self.root / CHECKPOINT_FILES[checkpoint]

    @property
    def run(self) -> Path:
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def lock(self) -> Path:
        """Held by the run's one writer (``part.base.lock``) while it lives; not a result."""
        return self.root / ".lock"

    def eval_lock(self, checkpoint: str, attack: str) -> Path:
        """Held by the one evaluation of ``attack`` on ``checkpoint``'s weights; jobs of other attacks of the
        run write beside it (the workflow runs one per attack)."""
        return self.root / eval_dir_name(checkpoint) / f".{attack}.lock"

    @property
    def written(self) -> tuple[Path, ...]:
        """Every file the training loop writes into the run directory (atomically)."""
        return self.checkpoint, self.log, self.model, self.best, self.ema, self.run, self.config


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run's ``log.jsonl`` (one JSON object a line)."""
    path = RunPaths(Path(run_dir)).log
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (log.jsonl is written after every epoch)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_log_so_far(run_dir: str | Path) -> list[dict[str, Any]]:
    """The epochs of a run's ``log.jsonl`` while it may be written: a last line that does not parse (a writer
    caught mid-line, on a file system without atomic renames) is left for the next look; no log is no epoch."""
    path = RunPaths(Path(run_dir)).log
    try:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path}: line {i + 1} is not JSON; the log is corrupted (the run's "
                                 "checkpoint.pt holds its history: resume the run to rewrite it)") from None
    return records
