"""Fault-injection campaign: SIGKILL a small training run at random moments, resume it, and check that
it ends with the weights of an uninterrupted run and leaves no stray file; then SIGTERM or SIGKILL its
evaluation at random moments, rerun it, and check the same of the results. Prints one JSON object.

    python benchmarks/fault_injection.py --kills 30 --eval-kills 20 [--seed 0] [--epochs 6]

Each training trial starts ``part train`` on the bundled digits (small_cnn, PART, CPU), kills it with SIGKILL
after a random delay (during startup, an epoch, a checkpoint or log write, or after a file appeared),
then runs the same command to the end — killing it again first with probability 1/2 — and compares
``model.pt`` with the reference run's, tensor by tensor (bit-identical is the claim on the CPU). A run
directory must then hold only the files training writes: no ``.NAME.*.tmp`` of a killed writer.

Each evaluation trial copies the reference run, starts ``part evaluate`` (natural + PGD-20, merged into
metrics.json) and stops it with SIGTERM or SIGKILL (half each; again with probability 1/2) at a random moment
of its work (after it took its locks: the startup before writes nothing), then runs it to the end. A
SIGTERMed evaluation must exit 143 and leave no temporary or lock at once;
after the rerun every result must equal the uninterrupted evaluation's (per-example flags, accuracies,
worst case) and the run directory hold only its files.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from part.base.torchfiles import load_torch
from part.data.prepared import prepare_digits, save_prepared

FINISHED = {"model.pt", "run.json", "log.jsonl", "config.json"}
"""What a finished run directory holds (the checkpoint is removed once model.pt exists)."""

EVAL_ATTACKS = ("natural", "pgd20")
EVALUATED = FINISHED | {"metrics.json", "eval", *(f"eval/{a}.{ext}" for a in EVAL_ATTACKS for ext in ("json", "correct.npz"))}
"""What an evaluated run directory holds: nothing more (the merges' ``eval/.merge.lock`` is removed as each ends)."""
EVAL_N_EXAMPLES = 200


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


def evaluate_command(run: Path) -> list[str]:
    return [sys.executable, "-m", "part.cli", "evaluate", "--run", str(run), "--attacks", ",".join(EVAL_ATTACKS),
            "--n-examples", str(EVAL_N_EXAMPLES)]


def working(run: Path, pid: int) -> bool:
    """Whether the evaluation ``pid`` holds a lock of ``run`` (one a killed attempt left is another PID's): it
    has loaded the model and attacks, or writes."""
    for path in (run / "eval").glob(".*.lock"):
        try:
            if json.loads(path.read_text())["pid"] == pid:
                return True
        except (OSError, ValueError, KeyError):  # gone, or its record not written yet
            continue
    return False


def start_working(command: list[str], run: Path, env: dict[str, str]) -> tuple[subprocess.Popen, float]:
    """Start an evaluation and return once it holds its locks (or has ended), with the seconds that took."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    while proc.poll() is None and not working(run, proc.pid):
        time.sleep(0.01)
    return proc, time.perf_counter() - t0


def stopped(command: list[str], run: Path, delay: float, sig: signal.Signals, env: dict[str, str]) -> dict:
    """Start an evaluation and send it ``sig`` ``delay`` seconds after it took its locks (its startup, Python's
    imports, writes nothing) and its exit code; 'finished' if it had printed its summary line first (a signal
    during the interpreter's shutdown, which restores the default handlers, ends it with -15 then)."""
    proc, _ = start_working(command, run, env)
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
    output = proc.communicate()[0]
    done = "worst case" in output  # cmd_evaluate's last line
    return {"signal": sig.name, "delay": round(delay, 2), "outcome": "finished" if done else "stopped",
            "returncode": proc.returncode}


def run_files(run: Path) -> set[str]:
    """Every file and directory below ``run``, relative to it."""
    return {str(p.relative_to(run)) for p in run.rglob("*")}


def results_of(run: Path) -> dict:
    """What an evaluation computed: per attack the flags and the numbers, and the worst case (not its timings)."""
    out = {}
    for attack in EVAL_ATTACKS:
        with np.load(run / "eval" / f"{attack}.correct.npz") as f:
            flags = (f["correct"].tolist(), f["index"].tolist())
        entry = json.loads((run / "eval" / f"{attack}.json").read_text())
        out[attack] = (flags, *(entry[k] for k in ("accuracy", "n_correct", "n_examples", "settings",
                                                    "checkpoint_sha256", "correct_sha256")))
    out["worst_case"] = json.loads((run / "metrics.json").read_text())["worst_case"]
    return out


def eval_campaign(kills: int, rng: random.Random, reference_run: Path, workdir: Path, env: dict[str, str]) -> dict:
    """SIGTERM / SIGKILL evaluations of a copy of ``reference_run`` at random moments; rerun; compare."""
    uninterrupted = workdir / "eval_reference"
    shutil.copytree(reference_run, uninterrupted)
    proc, startup = start_working(evaluate_command(uninterrupted), uninterrupted, env)
    t0 = time.perf_counter()
    assert proc.wait() == 0, "the uninterrupted evaluation failed"
    seconds = time.perf_counter() - t0  # from its locks to its end: the attacks, their files and the merge
    expected = results_of(uninterrupted)
    trials = []
    for trial in range(kills):
        run = workdir / f"eval_trial{trial}"
        shutil.copytree(reference_run, run)
        stops = []
        for _ in range(1 + (rng.random() < 0.5)):
            sig = rng.choice([signal.SIGTERM, signal.SIGKILL])
            delay = rng.uniform(0, 0.75 * seconds)  # inside the work, however the machine's load varies
            stops.append(stopped(evaluate_command(run), run, delay, sig, env))
            stops[-1]["left"] = sorted(run_files(run) - EVALUATED)  # what the stopped process left behind
        rerun = subprocess.run(evaluate_command(run), capture_output=True, text=True, env=env)
        trials.append({"trial": trial, "stops": stops, "rerun_returncode": rerun.returncode,
                       "identical": rerun.returncode == 0 and results_of(run) == expected,
                       "stray_files": sorted(run_files(run) - EVALUATED)})
    stops = [s for t in trials for s in t["stops"] if s["outcome"] == "stopped"]
    terms = [s for s in stops if s["signal"] == "SIGTERM"]
    return {"kills": kills, "startup_seconds": round(startup, 2), "working_seconds": round(seconds, 2),
            "sigterm": len(terms),
            "sigkill": len(stops) - len(terms),
            "sigterm_exit_143": sum(s["returncode"] == 143 for s in terms),
            "left_by_sigterm": sum(len(s["left"]) for s in terms),
            "left_by_sigkill": sum(len(s["left"]) for s in stops if s["signal"] == "SIGKILL"),
            "identical": sum(t["identical"] for t in trials),
            "stray_files": sum(len(t["stray_files"]) for t in trials), "trials": trials}


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_torch(a), load_torch(b)
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def campaign(kills: int, seed: int, epochs: int, workdir: Path, eval_kills: int = 0) -> dict:
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
            "temporaries_swept": sum(len(t["swept"]) for t in trials), "trials": trials,
            "evaluation": eval_campaign(eval_kills, rng, workdir / "reference", workdir, env) if eval_kills else None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=30, help="training trials (each kills once or twice)")
    p.add_argument("--eval-kills", type=int, default=20, help="evaluation trials (each stops it once or twice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    p.add_argument("--epochs", type=int, default=6)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = campaign(args.kills, args.seed, args.epochs, Path(tmp), args.eval_kills)
    print(json.dumps(result, indent=1))
    print(f"training: {result['identical']}/{args.kills} resumed bit-identical, {result['stray_files']} stray files, "
          f"{result['temporaries_swept']} temporaries of killed writers swept", file=sys.stderr)
    clean = result["identical"] == args.kills and result["stray_files"] == 0
    if (ev := result["evaluation"]) is not None:
        print(f"evaluation: {ev['identical']}/{args.eval_kills} reruns identical after {ev['sigterm']} SIGTERMs "
              f"({ev['sigterm_exit_143']} exited 143, leaving {ev['left_by_sigterm']} files) and {ev['sigkill']} "
              f"SIGKILLs (leaving {ev['left_by_sigkill']} files), {ev['stray_files']} stray files after the reruns",
              file=sys.stderr)
        clean = clean and (ev["identical"] == args.eval_kills and ev["stray_files"] == 0 and ev["left_by_sigterm"] == 0
                           and ev["sigterm_exit_143"] == ev["sigterm"])
    raise SystemExit(0 if clean else 1)


if __name__ == "__main__":
    main()
