"""A run's directory: the files training writes into it, and its per-epoch log.

Kept apart from the training loop (and free of torch) so that evaluation, figures and tables find a
run's files without importing the trainer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    def run(self) -> Path:
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def written(self) -> tuple[Path, ...]:
        """Every file the training loop writes into the run directory (atomically)."""
        return self.checkpoint, self.log, self.model, self.run, self.config


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run's ``log.jsonl`` (one JSON object a line)."""
    path = RunPaths(Path(run_dir)).log
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (log.jsonl is written after every epoch)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
