"""The workflow itself killed: SIGKILL the whole Snakemake process group during training and again during
evaluation, rerun the documented command, and get the tables of an uninterrupted run — byte for byte, which
also shows that the same grid gives the same numbers twice on one machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import tiny_grid

ROOT = Path(__file__).resolve().parents[1]
TABLES = ["main.csv", "main.md", "per_seed.csv", "summary.csv", "claim_verdicts.csv", "claim_verdicts.md"]


def wrapper(workdir: Path, args: list[str], name: str) -> subprocess.Popen:
    """The documented command (`make demo` runs it): unlock a stale lock, then run the workflow; its output
    goes to ``workdir/name.log`` (a pipe would fill and stall Snakemake)."""
    with open(workdir / f"{name}.log", "w") as out:
        return subprocess.Popen([sys.executable, "-m", "part.workflow_lock", *args], cwd=workdir, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def output(workdir: Path, name: str) -> str:
    return (workdir / f"{name}.log").read_text()


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the workflow's whole process group (Snakemake and its jobs) once ``ready()`` is true."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the workflow ended before the kill point"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def training_epoch_logged(workdir: Path) -> bool:
    logs = list((workdir / "logs" / "train").rglob("*.log")) if (workdir / "logs" / "train").exists() else []
    return any("epoch   2/" in p.read_text() for p in logs)


def evaluating(workdir: Path) -> bool:
    """An evaluation job has started: one per run (logs/metrics, evaluation.jobs: per_model) or per attack."""
    return any((workdir / "logs" / rule).exists() and any((workdir / "logs" / rule).rglob("*.log"))
               for rule in ("metrics", "evaluate"))


@pytest.mark.slow
def test_killed_workflow_reruns_with_the_same_command_to_the_same_tables(tmp_path, tiny_workflow):
    uninterrupted, args = tiny_workflow
    killed = tmp_path / "killed"
    tiny_grid(killed)
    kill_when(wrapper(killed, args, "first"), lambda: training_epoch_logged(killed))
    assert list((killed / ".snakemake" / "locks").glob("*.lock")), "a killed Snakemake leaves its lock"
    plain = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=killed, capture_output=True, text=True,
                           timeout=120)
    assert plain.returncode != 0 and "LockException" in plain.stdout + plain.stderr  # what a user hit before
    kill_when(wrapper(killed, args, "second"), lambda: evaluating(killed))
    assert "stale Snakemake lock" in output(killed, "second")
    assert wrapper(killed, args, "third").wait(timeout=900) == 0, output(killed, "third")
    assert "stale Snakemake lock" in output(killed, "third")
    resumed = [p.read_text() for p in (killed / "logs" / "train").rglob("*.log")]
    assert any("resuming" in text for text in resumed), "the killed training run resumed from its checkpoint"

    for name in TABLES:
        ours, theirs = (d / "results" / "tables" / name for d in (killed, uninterrupted))
        assert ours.read_bytes() == theirs.read_bytes(), name
    assert not list((killed / "results").rglob(".*.tmp"))
