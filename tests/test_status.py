"""part.workflow.status (``part status``) and part.analysis.tensorboard_export (``part tensorboard``) on a grid written by hand:
run directories, logs, lock files and job logs as the pipeline writes them; nothing is trained."""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from part.base import grid, rundir
from part.cli import main
from part.workflow import joblog, plan, status

ROOT = Path(__file__).resolve().parents[1]

# ResNet-18 on CIFAR-10, 6 epochs, one job per run for natural + PGD-20 on 1 000 test images.
CONFIG = {
    "data": {"raw_dir": "raw", "prepared_dir": "prepared", "mirror": None},
    "results_dir": "results",
    "datasets": {"cifar10": {"arch": "resnet18"}},
    "variants": {"at": {"label": "AT", "family": "AT", "run": {"method": "at"}},
                 "part_s1": {"label": "PART (s = 1)", "family": "AT",
                             "run": {"method": "part", "mask": {"refresh_every": 1}}}},
    "seeds": [0, 1, 2, 3],
    "run": {"device": "cuda", "epochs": 6, "warmup_epochs": 2},
    "evaluation": {"attacks": ["natural", "pgd20"], "jobs": "per_model", "batch_size": 500, "n_examples": 1000,
                   "aa_n_examples": 100, "checkpoint": "last", "compare_checkpoints": []},
    "statistics": {"confidence": 0.95, "paper_runs": 3},
    "resources": {"train": {"gpu": 1, "cpus_per_gpu": 1, "mem_mb": 1000, "runtime": 10},
                  "evaluate": {"gpu": 1, "cpus_per_gpu": 1, "mem_mb": 1000, "runtime": 10}},
}
# Throughput: an AT epoch of 500 32² images in 1 s (100 s per CIFAR-10 epoch, 600 s a 6-epoch AT run);
# natural 1 000 images/s and PGD-20 100 images/s: one evaluation job of 1 000 images is 1 + 10 = 11 s.
AT_RUN, EVAL_JOB = 600.0, 11.0


def _stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds")


def write_lock(path: Path, host: str, pid: int, renewed: float, lease: float = 120.0, purpose: str = "part train"):
    """A lock file as part.base.lock writes it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": host, "pid": pid, "started": _stamp(renewed), "renewed": _stamp(renewed),
                                "lease_seconds": lease, "purpose": purpose, "token": "0" * 32}, sort_keys=True))


def write_log(run_dir: Path, seconds: list[float], half_line: bool = False) -> list[dict]:
    """``log.jsonl`` of an AT run's epochs taking ``seconds``; optionally a last line cut mid-write."""
    records = [{"epoch": i + 1, "phase": "at", "lr": 0.1, "loss": 2.0 - 0.1 * i, "train_acc": 30.0 + i,
                "full_eps_share": 1.0, "refreshed": False, "refresh_seconds": 0.0, "seconds": s,
                "images_per_second": 50_000 / s, "val_natural": 40.0 + i, "val_robust": 20.0 + i, "val_seconds": 0.0}
               for i, s in enumerate(seconds)]
    run_dir.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)
    (run_dir / "log.jsonl").write_text(text + ('{"epoch": 9, "lo' if half_line else ""))
    return records


def dead_pid() -> int:
    """The PID of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def tiny_grid(tmp_path, monkeypatch):
    """Eight runs of at, one of each state, in ``tmp_path`` (the working directory: results/ and logs/)."""
    monkeypatch.chdir(tmp_path)
    cfg = copy.deepcopy(CONFIG)
    (tmp_path / "grid.yaml").write_text(json.dumps(cfg))
    g = grid.load(cfg, "grid.yaml")
    steps = g.main[0].config.attack.steps
    (tmp_path / "train.json").write_text(json.dumps({
        "benchmark": "train_throughput", "device": "cuda", "at_epoch_seconds": 1.0, "part_epoch_seconds": 1.0,
        "refresh_seconds": 0.0, "args": {"model": "resnet18", "size": 32, "n": 500, "batch_size": 128,
                                         "precision": "bf16", "compile": "none", "steps": steps, "channels": 3,
                                         "classes": 10}}))
    (tmp_path / "eval.json").write_text(json.dumps({
        "model": "resnet18", "dataset": "synthetic 3x32x32", "device": "cuda",
        "results": {"natural": {"images_per_second": 1000.0}, "pgd20": {"images_per_second": 100.0}}}))
    run = {(r.variant, r.seed): g.run_dir(r) for r in g.main}
    host, now = socket.gethostname(), time.time()

    # at seed 0: finished and evaluated
    write_log(run["at", 0], [20.0] * 6)
    for name in ("model.pt", "run.json", "metrics.json"):
        (run["at", 0] / name).write_text("{}")
    (run["at", 0] / "eval").mkdir()
    for attack in ("natural", "pgd20"):
        (run["at", 0] / "eval" / f"{attack}.json").write_text(json.dumps({"seconds": 5.0, "n_examples": 1000}))
    # at seed 1: killed after epoch 2, its lock left behind by a process that is gone from this host
    write_log(run["at", 1], [20.0, 20.0])
    write_lock(run["at", 1] / ".lock", host, dead_pid(), now)
    # at seed 2: failed in epoch 2; the job log as part.workflow.joblog writes it
    write_log(run["at", 2], [30.0])
    with pytest.raises(ValueError), joblog.job_log(tmp_path / "logs" / "train" / "cifar10/resnet18/at/seed2.log"):
        raise ValueError("loss is nan in epoch 2")
    # at seed 3: training epoch 4 under a live lock (this test's process); a half-written last line
    write_log(run["at", 3], [10.0, 12.0, 14.0], half_line=True)
    write_lock(run["at", 3] / ".lock", host, os.getpid(), now)
    # part_s1 seed 0: trained, evaluating PGD-20 (natural written), its evaluation locks live
    write_log(run["part_s1", 0], [25.0] * 6)
    (run["part_s1", 0] / "model.pt").write_text("")
    (run["part_s1", 0] / "run.json").write_text("{}")
    (run["part_s1", 0] / "eval").mkdir()
    (run["part_s1", 0] / "eval" / "natural.json").write_text(json.dumps({"seconds": 1.0, "n_examples": 1000}))
    for attack in ("natural", "pgd20"):
        write_lock(run["part_s1", 0] / "eval" / f".{attack}.lock", host, os.getpid(), now, purpose="part evaluate")
    # part_s1 seed 1: its lock's lease ran out an hour ago, on another host
    write_log(run["part_s1", 1], [25.0])
    write_lock(run["part_s1", 1] / ".lock", "node-17", 4242, now - 3600)
    # part_s1 seed 2: stopped after epoch 3 (its job ended and removed its lock); part_s1 seed 3: not started
    write_log(run["part_s1", 2], [25.0] * 3)
    return g


def _by(s: status.GridStatus) -> dict[tuple[str, int], status.RunStatus]:
    return {(r.variant, r.seed): r for r in s.runs}


def _sources(tmp_path: Path) -> list[plan.Throughput]:
    return [plan.load_throughput(tmp_path / "train.json"), plan.load_throughput(tmp_path / "eval.json")]


def test_each_state_of_a_hand_written_grid(tiny_grid, tmp_path):
    s = _by(status.grid_status(tiny_grid, "logs", _sources(tmp_path)))
    assert {key: r.state for key, r in s.items()} == {
        ("at", 0): "done", ("at", 1): "stalled", ("at", 2): "failed", ("at", 3): "training",
        ("part_s1", 0): "evaluating", ("part_s1", 1): "stalled", ("part_s1", 2): "stopped",
        ("part_s1", 3): "not started"}
    assert s["at", 3].detail == "epoch 4 of 6"  # the half-written fourth line is not an epoch yet
    assert (s["at", 3].epochs_done, s["at", 3].loss, s["at", 3].val_robust) == (3, pytest.approx(1.8), 22.0)
    assert s["part_s1", 0].detail == "pgd20"  # natural.json is written: PGD-20 is what runs
    dead = s["at", 1]
    assert f"host {socket.gethostname()}" in dead.detail and "is gone from" in dead.detail
    assert "resumes from" in dead.next_step and f"results/{dead.path}/checkpoint.pt" in dead.next_step
    expired = s["part_s1", 1]
    assert "host node-17, PID 4242" in expired.detail and "lease of 120 s ran out" in expired.detail
    assert "PID 4242 no longer runs on node-17" in expired.next_step


def test_the_failed_run_names_its_error_line_and_job_log(tiny_grid, tmp_path):
    failed = _by(status.grid_status(tiny_grid, "logs", _sources(tmp_path)))["at", 2]
    assert failed.detail == "[part] job failed: ValueError: loss is nan in epoch 2"
    assert failed.job_log == str(Path("logs/train/cifar10/resnet18/at/seed2.log"))
    assert failed.job_log in failed.next_step


def test_a_later_attempt_clears_an_earlier_failure(tiny_grid, tmp_path):
    """A resumed training job appends to its log: once it started, the old failure is history."""
    log = tmp_path / "logs" / "train" / "cifar10/resnet18/at/seed2.log"
    with joblog.job_log(log, mode="a"):
        print("[part] resuming")
    assert _by(status.grid_status(tiny_grid, "logs", _sources(tmp_path)))["at", 2].state == "stopped"


def test_eta_arithmetic(tiny_grid, tmp_path):
    """Training left from each run's own seconds per epoch (the throughput file where it logged none), one
    evaluation job of 11 s for each run not evaluated; the grid's ETA spreads the sum over the 2 running jobs."""
    s = status.grid_status(tiny_grid, "logs", _sources(tmp_path))
    by = _by(s)
    expected = {("at", 0): 0.0, ("at", 1): 4 * 20 + EVAL_JOB, ("at", 2): 5 * 30 + EVAL_JOB,
                ("at", 3): 3 * 12 + EVAL_JOB, ("part_s1", 0): EVAL_JOB, ("part_s1", 1): 5 * 25 + EVAL_JOB,
                ("part_s1", 2): 3 * 25 + EVAL_JOB, ("part_s1", 3): AT_RUN + EVAL_JOB}
    assert {key: r.left for key, r in by.items()} == pytest.approx(expected)
    assert by["at", 3].seconds_per_epoch == pytest.approx(12.0)
    assert s.running == 2
    assert s.left == pytest.approx(sum(expected.values()))
    assert s.eta_seconds == pytest.approx(sum(expected.values()) / 2)
    assert s.stages["train"] | {"left_seconds": None} == {"jobs": 8, "done": 2, "epochs": 48,
                                                          "epochs_done": 6 + 2 + 1 + 3 + 6 + 1 + 3,
                                                          "left_seconds": None}
    assert s.stages["evaluate"]["jobs"] == 8 and s.stages["evaluate"]["done"] == 1
    assert s.stages["evaluate"]["left_seconds"] == pytest.approx(7 * EVAL_JOB)


def test_without_throughput_files_the_shipped_rates_cost_what_no_log_measured(tiny_grid):
    not_started = _by(status.grid_status(tiny_grid, "logs"))["part_s1", 3]
    shipped = plan.shipped_estimate()
    run = next(r for r in tiny_grid.main if r.variant == "part_s1" and r.seed == 3)
    train = plan.run_seconds(run.config, shipped.basis)
    evaluation = plan.throughput_seconds(tiny_grid, run, plan.stages(tiny_grid, "cifar10")[1][0], shipped)
    assert not_started.train_left == pytest.approx(train) and not_started.eval_left == pytest.approx(evaluation)


def test_cli_text_and_json(tiny_grid, tmp_path, capsys):
    main(["status", "--configfile", "grid.yaml", "--throughput", "train.json", "eval.json"])
    out = capsys.readouterr().out
    assert "cifar10 / at\n" in out and "cifar10 / part_s1\n" in out
    assert "training epoch 4 of 6" in out and "12.0 s/epoch" in out
    assert "why:  [part] job failed: ValueError: loss is nan in epoch 2  (logs/train/cifar10/resnet18/at/seed2.log)" in out
    assert out.count("next: ") == 3  # the failed run and the two stalled ones
    assert "at the 2 job(s) running now: ETA 9.5 min" in out  # 1 143 s / 2
    main(["status", "--configfile", "grid.yaml", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"not started": 1, "training": 1, "stopped": 1, "evaluating": 1, "done": 1,
                                "failed": 1, "stalled": 2}
    assert report["running"] == 2


def test_watch_redraws_until_ctrl_c(tiny_grid, tmp_path):
    import signal

    watch = subprocess.Popen([sys.executable, "-m", "part", "status", "--configfile", "grid.yaml", "--watch", "0.2"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    seen = 0
    while seen < 2:  # two redraws, then Ctrl-C
        seen += "every 0.2 s (Ctrl-C ends)" in watch.stdout.readline()
    watch.send_signal(signal.SIGINT)
    out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0 and "Traceback" not in err


@pytest.mark.parametrize("watch", ["0", "-5", "soon"])
def test_watch_needs_a_positive_number_of_seconds(tiny_grid, watch, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["status", "--configfile", "grid.yaml", "--watch", watch])
    assert exit_.value.code == 2 and f"{watch!r}: expected seconds between refreshes" in capsys.readouterr().err


def test_a_corrupted_line_before_the_last_is_an_error_naming_the_file(tiny_grid, capsys):
    log = tiny_grid.run_dir(tiny_grid.main[0]) / "log.jsonl"
    log.write_text('{"epoch": 1\n' + log.read_text())
    with pytest.raises(SystemExit) as exit_:
        main(["status", "--configfile", "grid.yaml"])
    assert exit_.value.code == 2 and f"{log}: line 1 is not JSON" in capsys.readouterr().err


def test_status_of_the_paper_grid_reads_files_only(tmp_path):
    """config.yaml, nothing run: no torch import (it would cost seconds on a login node)."""
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    code = ("import sys; from part.cli import main; main(['status', '--configfile', 'config.yaml']); "
            "assert 'torch' not in sys.modules, 'part status imported torch'")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert "runs: 100 not started" in done.stdout and "nothing runs now" in done.stdout


def _events(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def _gallery(tiny_grid) -> Path:
    """The dataset's gallery figure (it shows part_s1 seed 0, the first CAM-based PART run): a small PNG."""
    from PIL import Image

    path = tiny_grid.results_dir / "figures" / "gallery_cifar10.png"
    path.parent.mkdir(parents=True)
    Image.new("RGB", (12, 8), (200, 30, 30)).save(path)
    return path


def test_tensorboard_holds_every_scalar_of_every_log_and_a_rerun_adds_only_new_epochs(tiny_grid, capsys):
    _gallery(tiny_grid)
    main(["tensorboard", "--configfile", "grid.yaml", "--out", "tb"])
    assert "7 of 8 runs updated" in capsys.readouterr().out  # part_s1 seed 3 has no log yet
    for run in tiny_grid.runs.values():
        records = rundir.read_log_so_far(tiny_grid.run_dir(run))
        if not records:
            assert not Path("tb", run.dataset, run.variant, f"seed{run.seed}").exists()
            continue
        acc = _events(Path("tb", run.dataset, run.variant, f"seed{run.seed}"))
        keys = {k for r in records for k, v in r.items() if k != "epoch" and not isinstance(v, str)}
        assert set(acc.Tags()["scalars"]) == keys
        for key in keys:
            events = acc.Scalars(key)  # simple_value is a float32
            assert [e.step for e in events] == [r["epoch"] for r in records]
            assert [e.value for e in events] == pytest.approx([float(r[key]) for r in records], rel=1e-6)
        images = acc.Images("gallery/eps_maps") if "gallery/eps_maps" in acc.Tags()["images"] else []
        shown = (run.variant, run.seed) == ("part_s1", 0)
        assert [(i.step, i.width, i.height) for i in images] == ([(6, 12, 8)] if shown else [])

    # the live run logs two more epochs; a rerun appends them alone, in one new event file
    live = tiny_grid.run_dir(next(r for r in tiny_grid.main if r.variant == "at" and r.seed == 3))
    records = write_log(live, [10.0, 12.0, 14.0, 16.0, 18.0])
    out = Path("tb/cifar10/at/seed3")
    before = sorted(out.glob("events.out.tfevents.*"))
    main(["tensorboard", "--configfile", "grid.yaml", "--out", "tb"])
    assert "tb/cifar10/at/seed3: 2 new epoch(s)\n[part] 1 of 8 runs updated" in capsys.readouterr().out
    assert len(sorted(out.glob("events.out.tfevents.*"))) == len(before) + 1
    loss = _events(out).Scalars("loss")
    assert [e.step for e in loss] == [1, 2, 3, 4, 5]
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in records], rel=1e-6)
    main(["tensorboard", "--configfile", "grid.yaml", "--out", "tb"])
    assert "0 of 8 runs updated" in capsys.readouterr().out


def test_tensorboard_refuses_without_the_extra(tiny_grid, monkeypatch, capsys):
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith("tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # what an environment without it imports
    with pytest.raises(SystemExit) as exit_:
        main(["tensorboard", "--configfile", "grid.yaml", "--out", "tb"])
    assert exit_.value.code == 2
    assert "needs the optional 'tensorboard' extra" in capsys.readouterr().err
    assert not Path("tb").exists()


def _attempt(path: Path, error: BaseException | None) -> None:
    """One attempt of a job, through part.workflow.joblog as a workflow script runs (appending, as training resumes)."""
    with pytest.raises(type(error)) if error else contextlib.nullcontext(), joblog.job_log(path, mode="a"):
        print("[part] epoch ...")
        if error:
            raise error


@pytest.mark.parametrize("attempts, expected", [
    ([None], None),
    ([ValueError("bad key")], "[part] job failed: ValueError: bad key"),
    ([SystemExit(143)], "[part] job stopped by SIGTERM (exit code 143)"),
    ([ValueError("bad key"), None], None),
    ([None, KeyboardInterrupt()], "[part] job interrupted (SIGINT)"),
])
def test_the_failure_of_a_job_logs_last_attempt(tmp_path, attempts, expected):
    log = tmp_path / "job.log"
    for error in attempts:
        _attempt(log, error)
    assert joblog.last_failure(log.read_text()) == expected


def test_an_attempt_still_running_has_no_failure_yet(tmp_path):
    log = tmp_path / "job.log"
    _attempt(log, ValueError("bad key"))
    with open(log, "a") as f:
        f.write("[part] resuming after epoch 3/6\n")
    assert joblog.last_failure(log.read_text()) is None


@pytest.mark.parametrize("jobs, per_run", [("per_model", 1), ("per_attack", 2 + 1)])
def test_compared_weights_count_as_jobs_only_where_they_have_their_own(tmp_path, monkeypatch, jobs, per_run):
    """per_model: a run's one evaluation job also evaluates best.pt; per_attack: one job per attack, and one for
    the compared weights (rules/evaluate.smk)."""
    monkeypatch.chdir(tmp_path)
    cfg = copy.deepcopy(CONFIG)
    cfg["run"]["validation"] = {"size": 100}
    cfg["evaluation"].update(jobs=jobs, compare_checkpoints=["best"])
    g = grid.load(cfg)
    evaluate = status.grid_status(g).stages["evaluate"]
    assert (evaluate["jobs"], evaluate["done"]) == (len(g.main) * per_run, 0)
