"""The Snakemake workflow itself: lint, the full grid's job counts, and the demo end to end."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=ROOT, check=True):
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def job_counts(output: str) -> dict[str, int]:
    table = output[output.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def test_lint_is_clean():
    out = snakemake("--lint", "--cores", "1")
    assert "Congratulations, your workflow is in a good condition!" in out


def test_full_grid_dry_run_has_one_job_per_run_and_per_run_attack():
    counts = job_counts(snakemake("-n", "--cores", "1", "--directory", str(ROOT), "--snakefile", str(ROOT / "Snakefile")))
    runs, attacks = 3 * 9 * 3, 4
    assert counts["train"] == runs
    assert counts["evaluate"] == runs * attacks
    assert counts["metrics"] == runs and counts["prepare_dataset"] == 3 and counts["aggregate"] == 1


def test_a_bad_grid_stops_before_any_job(tmp_path):
    cfg = (ROOT / "configs" / "demo.yaml").read_text().replace("run: {method: at}", "run: {method: at, attack: {eps_low: 0.9}}")
    (tmp_path / "bad.yaml").write_text(cfg)
    out = snakemake("-n", "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert "key 'attack.eps_low'" in out and "variants.at" in out


@pytest.mark.slow
def test_demo_end_to_end_then_nothing_to_do(tmp_path):
    workdir = tmp_path / "demo"
    shutil.copytree(ROOT / "configs", workdir / "configs")
    shutil.copytree(ROOT / "profiles", workdir / "profiles")
    args = ["--cores", "2", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(workdir / "configs" / "demo.yaml")]
    snakemake(*args)
    table = pd.read_csv(workdir / "results" / "tables" / "main.csv")
    assert len(table) == 9 and list(table.columns) == ["dataset", "arch", "method", "Natural", "PGD-20", "MMA", "AA",
                                                       "Worst case"]
    summary = pd.read_csv(workdir / "results" / "tables" / "summary.csv")
    assert (summary["n_seeds"] == 2).all() and summary["missing_seeds"].isna().all()
    metrics = json.loads((workdir / "results/digits/small_cnn/part_s1/seed1/metrics.json").read_text())
    assert metrics["attacks"]["aa"]["n_examples"] == 50 and metrics["attacks"]["natural"]["n_examples"] == 360
    assert "Nothing to be done" in snakemake(*args, "-n")
