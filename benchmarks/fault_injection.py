"""Fault-injection campaign: SIGKILL a small training run at random moments, resume it, and check that
it ends with the weights of an uninterrupted run and leaves no stray file. Prints one JSON object.

    python benchmarks/fault_injection.py --kills 30 [--seed 0] [--epochs 6]

Each trial starts ``part train`` on the bundled digits (small_cnn, PART, CPU), kills it with SIGKILL
after a random delay (during startup, an epoch, a checkpoint or log write, or after a file appeared),
then runs the same command to the end — killing it again first with probability 1/2 — and compares
``model.pt`` with the reference run's, tensor by tensor (bit-identical is the claim on the CPU). A run
directory must then hold only the files training writes: no ``.NAME.*.tmp`` of a killed writer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

from part.data import prepare_digits, save_prepared
from part.torchfiles import load_torch

FINISHED = {"model.pt", "run.json", "log.jsonl", "config.json"}
"""What a finished run directory holds (the checkpoint is removed once model.pt exists)."""


def train_command(config_path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "part.cli", "train", "--config", str(config_path), "--out", str(out)]


def run_killed(config_path: Path, out: Path, delay: float, env: dict[str, str]) -> str:
    """Start training and SIGKILL it after ``delay`` seconds; 'finished' if it ended first."""
    proc = subprocess.Popen(train_command(config_path, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    try:
        proc.wait(timeout=delay)
        return "finished"
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return "killed"


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_torch(a), load_torch(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def campaign(kills: int, seed: int, epochs: int, workdir: Path) -> dict:
    rng = random.Random(seed)
    data = workdir / "prepared"
    save_prepared(data / "digits.pt", prepare_digits())
    config_path = workdir / "run.yaml"
    config_path.write_text(yaml.safe_dump({"dataset": "digits", "data_dir": str(data), "device": "cpu",
                                           "method": "part", "epochs": epochs, "warmup_epochs": 2}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run(train_command(config_path, workdir / "reference"), check=True, capture_output=True, env=env)
    reference_seconds = time.perf_counter() - t0
    trials = []
    for trial in range(kills):
        out = workdir / f"trial{trial}"
        delays = [rng.uniform(0.5, reference_seconds)]
        if rng.random() < 0.5:
            delays.append(rng.uniform(0.5, reference_seconds))
        outcomes = [run_killed(config_path, out, d, env) for d in delays]
        resumed = subprocess.run(train_command(config_path, out), capture_output=True, text=True, env=env)
        files = sorted(p.name for p in out.iterdir())
        trials.append({"trial": trial, "delays": [round(d, 2) for d in delays], "outcomes": outcomes,
                       "resume_returncode": resumed.returncode,
                       "swept": [line for line in resumed.stdout.splitlines() if "killed mid-write" in line],
                       "identical": resumed.returncode == 0 and same_weights(out / "model.pt",
                                                                            workdir / "reference" / "model.pt"),
                       "stray_files": sorted(set(files) - FINISHED)})
    return {"kills": kills, "seed": seed, "epochs": epochs, "reference_seconds": round(reference_seconds, 2),
            "identical": sum(t["identical"] for t in trials),
            "stray_files": sum(len(t["stray_files"]) for t in trials),
            "temporaries_swept": sum(len(t["swept"]) for t in trials), "trials": trials}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=30, help="trials (each kills once or twice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = campaign(args.kills, args.seed, args.epochs, Path(tmp))
    print(json.dumps(result, indent=1))
    print(f"{result['identical']}/{args.kills} resumed bit-identical, {result['stray_files']} stray files, "
          f"{result['temporaries_swept']} temporaries of killed writers swept", file=sys.stderr)
    raise SystemExit(0 if result["identical"] == args.kills and result["stray_files"] == 0 else 1)


if __name__ == "__main__":
    main()
