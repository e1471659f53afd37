"""part.workflow.plan (``part plan``) against hand computations from hand-written throughput files and run directories."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from part.base import grid
from part.base.config import from_dict
from part.cli import main
from part.workflow import plan

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = "part/reference/rates.json"

# Two datasets x 2 methods x 2 seeds, 4 epochs (2 warm-up + 2 PART), plus one experiment run on digits;
# CIFAR-10 trains on 2 GPUs a job, evaluation on none (a CPU job counts as one device).
CONFIG = {
    "data": {"raw_dir": "raw", "prepared_dir": "prepared", "mirror": None},
    "results_dir": "results",
    "datasets": {"digits": {"arch": "small_cnn"},
                 "cifar10": {"arch": "resnet18", "resources": {"train": {"gpu": 2}}}},
    "variants": {"at": {"label": "AT", "family": "AT", "run": {"method": "at"}},
                 "part_s1": {"label": "PART (s = 1)", "family": "AT",
                             "run": {"method": "part", "mask": {"refresh_every": 1}}}},
    "seeds": [0, 1],
    "run": {"device": "cpu", "epochs": 4, "warmup_epochs": 2},
    "evaluation": {"attacks": ["natural", "pgd20", "aa"], "jobs": "per_attack", "batch_size": 500, "n_examples": None,
                   "aa_n_examples": 100, "checkpoint": "last", "compare_checkpoints": []},
    "statistics": {"confidence": 0.95, "paper_runs": 3},
    "resources": {"train": {"gpu": 1, "cpus_per_gpu": 1, "mem_mb": 1000, "runtime": 10},
                  "evaluate": {"gpu": 0, "cpus_per_gpu": 1, "mem_mb": 1000, "runtime": 10}},
    "experiments": {"s_sweep": {"title": "s", "datasets": ["digits"], "seeds": [0], "attacks": ["natural", "pgd20"],
                                "variants": {"s1": "part_s1",
                                             "part_s2": {"label": "PART (s = 2)", "family": "AT",
                                                         "run": {"method": "part", "mask": {"refresh_every": 2}}}}}},
}

# ResNet-18 on 500 images of 32²: AT epoch 1 s (100 s per 50 k), PART epoch 1.3 s of which refresh 0.2 s,
# i.e. PART training 1.1 x AT and a refresh 0.2 x AT.
TRAIN = {"benchmark": "train_throughput", "device": "cuda", "at_epoch_seconds": 1.0, "part_epoch_seconds": 1.3,
         "refresh_seconds": 0.2, "args": {"model": "resnet18", "size": 32, "n": 500, "batch_size": 128,
                                          "precision": "bf16", "compile": "none", "steps": 10, "channels": 3,
                                          "classes": 10}}
# CIFAR-10 (50 k, 32²), 4 epochs: AT 4 x 100 = 400 s; PART s=1: 2 x 100 + 2 x 110 + 2 refreshes x 20 = 460 s.
CIFAR_TRAIN_SECONDS = 2 * (400 + 460)
# small_cnn on digits (8²) and ResNet-18 on synthetic 32² images, images/s.
EVAL_DIGITS = {"model": "small_cnn", "dataset": "digits", "device": "cpu",
               "results": {"natural": {"images_per_second": 1000.0}, "pgd20": {"images_per_second": 100.0},
                           "aa": {"images_per_second": 10.0}}}
EVAL_RESNET = {"model": "resnet18", "dataset": "synthetic 3x32x32", "device": "cuda",
               "results": {"pgd20": {"images_per_second": 50.0}}}
# AutoAttack on CIFAR-sized digits, ResNet-18: 20 images/s at batch 500 (the first, largest, batch size).
DEVICE_CHECK = {"device": "cuda", "device_name": "NVIDIA H200", "tiny": False, "cost_basis": None, "stages": {"autoattack": {
    "status": "ok", "result": {
        "digits": {"status": "error", "error": "x"},
        "cifar_sized": {"status": "ok", "result": {"dataset": "cifar10 (3, 32, 32)", "model": "resnet18", "per_batch_size": [
            {"batch_size": 500, "status": "ok", "images_per_second": 20.0},
            {"batch_size": 250, "status": "ok", "images_per_second": 15.0}]}}}}}}


def write(path: Path, content: dict) -> Path:
    path.write_text(json.dumps(content))
    return path


@pytest.fixture
def files(tmp_path):
    return [plan.load_throughput(write(tmp_path / f"{name}.json", content)) for name, content in
            (("train", TRAIN), ("eval_digits", EVAL_DIGITS), ("eval_resnet", EVAL_RESNET), ("check", DEVICE_CHECK))]


@pytest.fixture
def g(tmp_path):
    return grid.load({**copy.deepcopy(CONFIG), "results_dir": str(tmp_path / "results")}, "test config")


def rows_by_key(rows: list[plan.PlanRow]) -> dict[tuple[str, str], plan.PlanRow]:
    return {(r.dataset, r.stage): r for r in rows}


def write_log(g: grid.Grid, path: str, records: list[dict]) -> None:
    root = g.run_dir(g.runs[path])
    root.mkdir(parents=True, exist_ok=True)
    (root / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def epoch(seconds: float, phase: str = "at", refresh: float = 0.0) -> dict:
    return {"phase": phase, "seconds": seconds, "refresh_seconds": refresh, "refreshed": refresh > 0}


def test_the_numbers_equal_a_hand_computation_from_the_throughput_files(g, files):
    rows = rows_by_key(plan.plan(g, files))
    cifar_train = rows["cifar10", "train"]
    assert cifar_train.gpu_hours == pytest.approx(CIFAR_TRAIN_SECONDS / 3600)
    assert cifar_train.source == files[0].label == f"measured ({files[0].source})"
    # evaluation: 4 CIFAR-10 jobs of 10 k images at 50 images/s; digits: 360 test images (AutoAttack: 100)
    assert rows["cifar10", "pgd20"].gpu_hours == pytest.approx(4 * 10_000 / 50 / 3600)
    assert rows["cifar10", "aa"].gpu_hours == pytest.approx(4 * 100 / 20 / 3600)
    assert rows["cifar10", "aa"].source == files[3].label
    assert rows["digits", "natural"].gpu_hours == pytest.approx(5 * 360 / 1000 / 3600)
    assert rows["digits", "pgd20"].gpu_hours == pytest.approx(5 * 360 / 100 / 3600)
    assert rows["digits", "aa"].gpu_hours == pytest.approx(4 * 100 / 10 / 3600)
    assert rows["digits", "aa"].source == files[1].label


def test_throughput_is_scaled_by_pixels(tmp_path):
    """The same rate measured on 16² images is four times as many 32² images' worth of time."""
    half = plan.load_throughput(write(tmp_path / "e.json", {**EVAL_RESNET, "dataset": "synthetic 3x16x16"}))
    full = plan.load_throughput(write(tmp_path / "f.json", EVAL_RESNET))
    g = grid.load(copy.deepcopy(CONFIG))
    run = g.runs["cifar10/resnet18/at/seed0"]
    assert plan.throughput_seconds(g, run, plan.Stage("pgd20", ("pgd20",)), half) == pytest.approx(10_000 / 50 * 4)
    small = {**TRAIN, "args": {**TRAIN["args"], "size": 16}}
    assert plan.load_throughput(write(tmp_path / "t.json", small)).train_seconds(run.config) == pytest.approx(4 * 400)
    assert plan.throughput_seconds(g, run, plan.Stage("pgd20", ("pgd20",)), full) == pytest.approx(10_000 / 50)


def test_job_counts_are_the_grids(g, files):
    rows = plan.plan(g, files)
    by_key = rows_by_key(rows)
    assert [(r.dataset, r.stage, r.jobs) for r in rows[:-1]] == [
        ("digits", "train", 5), ("digits", "natural", 5), ("digits", "pgd20", 5), ("digits", "aa", 4),
        ("cifar10", "train", 4), ("cifar10", "natural", 4), ("cifar10", "pgd20", 4), ("cifar10", "aa", 4)]
    for (dataset, stage), row in by_key.items():
        if dataset == "total":
            continue
        runs = [r for r in g.runs.values() if r.dataset == dataset]
        assert row.jobs == (len(runs) if stage == "train" else sum(stage in g.attacks[r.path] for r in runs))
    assert by_key["total", "all"].jobs == len(g.runs) + sum(len(a) for a in g.attacks.values()) == 35


def test_one_job_per_model_costs_what_its_attacks_cost(tmp_path, files):
    """evaluation.jobs: per_model joins a run's attacks into one job: fewer jobs, the same device-hours."""
    cfg = {**copy.deepcopy(CONFIG), "results_dir": str(tmp_path / "results")}
    per_attack = plan.plan(grid.load(cfg), files)
    cfg["evaluation"]["jobs"] = "per_model"
    rows = plan.plan(grid.load(cfg), files)
    assert [(r.dataset, r.stage, r.jobs) for r in rows[:-1]] == [
        ("digits", "train", 5), ("digits", "natural+pgd20+aa", 4), ("digits", "natural+pgd20", 1),
        ("cifar10", "train", 4), ("cifar10", "natural+pgd20+aa", 4)]
    by_key = rows_by_key(rows)
    assert by_key["digits", "natural+pgd20+aa"].gpu_hours == pytest.approx(4 * (360 / 1000 + 360 / 100 + 100 / 10) / 3600)
    assert by_key["digits", "natural+pgd20"].gpu_hours == pytest.approx((360 / 1000 + 360 / 100) / 3600)
    assert by_key["cifar10", "natural+pgd20+aa"].gpu_hours is None  # no ResNet-18 natural rate: no number for the job
    assert rows[-1].jobs == 5 + 5 + 4 + 4 < per_attack[-1].jobs == 35
    digits = [r for r in rows if r.dataset == "digits" and r.stage != "train"]
    assert sum(r.gpu_hours for r in digits) == pytest.approx(
        sum(r.gpu_hours for r in per_attack if r.dataset == "digits" and r.stage != "train"))


def test_missing_measurements_are_none_and_said_so(g, files):
    rows = plan.plan(g, files)
    by_key = rows_by_key(rows)
    for key in (("digits", "train"), ("cifar10", "natural")):  # no small_cnn training, no ResNet natural rate
        assert by_key[key].gpu_hours is None and by_key[key].source == "no measurement"
    total = by_key["total", "all"]
    assert total.gpu_hours == pytest.approx(sum(r.gpu_hours for r in rows[:-1] if r.gpu_hours is not None))
    assert total.source == "lower bound: 2 of 8 rows have no measurement"
    printed = {tuple(line.split()[:2]): line.split()[3] for line in plan.text(rows).splitlines()[1:] if "--" not in line}
    assert printed == {(r.dataset, r.stage): "—" if r.gpu_hours is None else plan.hours(r.gpu_hours) for r in rows}
    assert printed["digits", "natural"] == "0.0005"  # 5 x 0.36 s: small numbers keep two significant digits
    assert all(r.gpu_hours is None and r.source == "no measurement" for r in plan.plan(g))


def test_existing_runs_take_precedence_over_the_throughput_files(g, files):
    write_log(g, "cifar10/resnet18/at/seed0", [epoch(10.0)] * 4)  # 40 s on 2 GPUs
    write_log(g, "digits/small_cnn/at/seed0", [epoch(3.0)] * 4)  # 12 s on 1 GPU
    eval_dir = g.run_dir(g.runs["cifar10/resnet18/at/seed1"]) / "eval"
    eval_dir.mkdir(parents=True)
    write(eval_dir / "pgd20.json", {"attack": "pgd20", "seconds": 30.0, "n_examples": 5000})  # 60 s for 10 k
    rows = rows_by_key(plan.plan(g, files))
    assert rows["cifar10", "train"].gpu_hours == pytest.approx((2 * 40 + 460 + 400 + 460) / 3600)
    assert rows["cifar10", "train"].source == f"runs (1 measured), measured ({files[0].source}) (3 jobs)"
    assert rows["cifar10", "pgd20"].gpu_hours == pytest.approx((60 + 3 * 10_000 / 50) / 3600)
    # digits trains nothing a file measured: the measured run's cost stands for the other four
    assert rows["digits", "train"].gpu_hours == pytest.approx(5 * 12 / 3600)
    assert rows["digits", "train"].source == "runs (1 measured); their mean for 4 unmeasured"


def test_a_partial_log_costs_the_epochs_to_come_at_the_mean_of_their_phase(g):
    cfg = g.runs["cifar10/resnet18/part_s1/seed0"].config  # epochs 0-1 warm-up, 2-3 PART, refreshed before both
    logged = [epoch(10.0, "warmup"), epoch(12.0, "warmup"), epoch(20.0, "part", refresh=4.0)]
    assert plan.logged_seconds(cfg, logged) == pytest.approx(10 + 12 + 20 + (16 + 4))
    assert plan.logged_seconds(cfg, logged[:2]) == pytest.approx(10 + 12 + 2 * 11)  # no PART epoch yet: all epochs'
    validating = from_dict({"dataset": "cifar10", "method": "at", "epochs": 4, "warmup_epochs": 2,
                            "validation": {"size": 100, "every": 2}})  # validates after epochs 1 and 3 (0-based)
    assert plan.logged_seconds(validating, [epoch(10.0), {**epoch(12.0), "val_seconds": 2.0}]) == pytest.approx(
        10 + 12 + 2 + 11 + (11 + 2))


def test_compared_checkpoints_are_one_job_per_main_run_or_part_of_its_evaluation_job(tmp_path, files):
    cfg = {**copy.deepcopy(CONFIG), "results_dir": str(tmp_path / "results")}  # no runs: the files' rates alone
    cfg["run"]["validation"] = {"size": 100, "every": 1, "steps": 2}
    cfg["evaluation"]["compare_checkpoints"] = ["best"]
    rows = rows_by_key(plan.plan(grid.load(cfg), files))
    row = rows["digits", "natural+pgd20 (best)"]
    assert row.jobs == 4 and row.gpu_hours == pytest.approx(4 * (360 / 1000 + 360 / 100) / 3600)
    assert rows["cifar10", "natural+pgd20 (best)"].gpu_hours is None  # no ResNet-18 natural rate
    cfg["evaluation"]["jobs"] = "per_model"  # the main runs' one evaluation job evaluates best.pt too
    rows = rows_by_key(plan.plan(grid.load(cfg), files))
    inside = rows["digits", "natural+pgd20 (best), in the jobs above"]
    assert inside.jobs == 0 and inside.gpu_hours == pytest.approx(row.gpu_hours)
    assert rows["digits", "natural+pgd20+aa"].jobs == 4  # the main runs' jobs, counted once


def test_files_that_are_not_throughput_files_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"x\.json: not a throughput file"):
        plan.load_throughput(write(tmp_path / "x.json", {"hello": 1}))
    with pytest.raises(ValueError, match=r"t\.json: key 'at_epoch_seconds' missing"):
        plan.load_throughput(write(tmp_path / "t.json", {k: v for k, v in TRAIN.items() if k != "at_epoch_seconds"}))
    with pytest.raises(ValueError, match=r"c\.json: key 'cost_basis' is null"):
        plan.load_throughput(write(tmp_path / "c.json", {"cost_basis": None, "tiny": True, "stages": {}}))
    with pytest.raises(ValueError, match=r"e\.json: key 'dataset'"):
        plan.load_throughput(write(tmp_path / "e.json", {**EVAL_RESNET, "dataset": "random noise"}))


def test_part_plan_prints_the_paper_grid_from_a_device_check(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # config.yaml's results_dir is relative: no runs here
    report = {"tiny": False, "device": "cuda", "device_name": "NVIDIA H200",
              "stages": {"speed": {"status": "ok", "result": {"attack_steps": 10}}}, "cost_basis": {
        "resnet18": {"setting": "s", "at_epoch_seconds_50k": 10.0, "part_train_over_at": 1.0, "refresh_over_at": 0.1,
                     "trades_over_at": 1.2, "mart_over_at": 1.5},
        "wrn34_10": {"setting": "s", "at_epoch_seconds_50k": 100.0}}}
    main(["plan", "--configfile", str(ROOT / "config.yaml"), "--throughput", str(write(tmp_path / "dc.json", report))])
    lines = capsys.readouterr().out.splitlines()
    train = {line.split()[0]: line.split() for line in lines if len(line.split()) > 1 and line.split()[1] == "train"}
    assert set(train) == {"cifar10", "svhn", "tinyimagenet200"}
    # SVHN: no experiments, 3 seeds of tests/test_cost_table.py's 9081 s per seed scaled by 73,257 / 50,000 images
    assert train["svhn"][2:4] == ["27", f"{3 * 9081 * 73_257 / 50_000 / 3600:.2f}"]
    assert train["svhn"][4] == "measured" and train["svhn"][5].endswith("dc.json)")
    assert any(line.startswith("total") for line in lines) and lines[-2].startswith("sources: runs = ")
    assert lines[0].split()[3] == "GPU-h" and "dc.json) = device_check on cuda (NVIDIA H200) [GPU-h]" in lines[-2]
    # one job per run for all four attacks (config.yaml's evaluation.jobs): the file measured none, the shipped
    # rates cost them, and say so
    estimated = [line for line in lines if " natural+pgd20+mma+aa+aa_release " in line]
    assert len(estimated) == 3 and all(line.rstrip().endswith(f"estimate (shipped rates from {SHIPPED})")
                                       for line in estimated)
    assert lines[-1].startswith("total: ") and " GPU-h: estimate (" in lines[-1]


def test_the_hours_name_the_device_that_measured_them(g, files):
    """GPU files cost CIFAR-10, a CPU file the digits evaluation: the unit is device-h and each row names its
    device; the legend names every file's; one kind of device alone names the unit."""
    rows = plan.plan(g, files)
    by_key = rows_by_key(rows)
    assert by_key["digits", "natural"].devices == (plan.CPU,) and by_key["cifar10", "train"].devices == (plan.GPU,)
    assert by_key["digits", "train"].devices == () and by_key["total", "all"].devices == (plan.CPU, plan.GPU)
    printed = plan.text(rows).splitlines()
    assert printed[0].split()[3] == "device-h" and "GPU-h" not in printed[0]
    line = {tuple(line.split()[:2]): line.split() for line in printed[1:]}
    assert line["digits", "natural"][3:5] == ["0.0005", "CPU"] and line["cifar10", "train"][4] == "GPU"
    assert line["digits", "train"][3] == "—" and line["total", "all"][4] == "CPU+GPU"
    assert "| device-h |" in plan.markdown(rows).splitlines()[0]
    legend = plan.legend(files)
    assert f"{files[1].label} = eval_throughput small_cnn on cpu [CPU-h]" in legend
    assert f"{files[3].label} = device_check on cuda (NVIDIA H200) [GPU-h]" in legend
    cpu_only = plan.plan(g, [files[1]])
    assert plan.header(cpu_only)[3] == "CPU-h" and "GPU" not in plan.text(cpu_only)
    assert plan.header(plan.plan(g, [files[0], files[2]]))[3] == "GPU-h"


def test_a_grid_on_the_cpu_costs_its_own_runs_in_cpu_hours(g, tmp_path):
    """The config trains on ``device: cpu``: its runs' own logs are CPU-seconds, whatever GPUs a job asks for."""
    write_log(g, "digits/small_cnn/at/seed0", [epoch(3.0)] * 4)
    rows = rows_by_key(plan.plan(g))
    assert rows["digits", "train"].devices == (plan.CPU,)
    assert plan.text(list(rows.values())).splitlines()[0].split()[3] == "CPU-h"
    on_gpu = {**copy.deepcopy(CONFIG), "results_dir": str(tmp_path / "results2")}
    on_gpu["run"]["device"] = "auto"
    g2 = grid.load(on_gpu)
    cifar, digits = g2.runs["cifar10/resnet18/at/seed0"], g2.runs["digits/small_cnn/at/seed0"]
    assert plan.runs_device(g2, cifar, plan.Stage("train")) == plan.GPU
    assert plan.runs_device(g2, digits, plan.Stage("pgd20", ("pgd20",))) == plan.CPU  # evaluation asks for gpu: 0


def test_part_plan_of_the_demo_calls_cpu_seconds_cpu_hours(tmp_path, capsys, monkeypatch):
    """The demo's grid with a throughput file measured on the CPU: no GPU-h anywhere in what it prints."""
    monkeypatch.chdir(tmp_path)
    report = {**TRAIN, "device": "cpu", "environment": {"device_name": "AMD EPYC"},
              "args": {**TRAIN["args"], "model": "small_cnn", "size": 8, "precision": "fp32", "channels": 1}}
    main(["plan", "--configfile", str(ROOT / "configs" / "demo.yaml"), "--throughput",
          str(write(tmp_path / "tt.json", report))])
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[3] == "CPU-h" and "GPU-h" not in out
    assert "tt.json) = train_throughput small_cnn on cpu (AMD EPYC) [CPU-h]" in out
    assert "no shipped rate for model 'small_cnn'" in out  # the shipped rates are a GPU's, of other models


# The shipped rates by hand (part/reference/rates.json): a ResNet-18 PGD-10 AT epoch of 50 k 32² images in
# 31.7 s is 50 000 x 11 forward + backward passes in 31.7 s; WRN-34-10's epoch takes 113.6 s.
PASSES_PER_SECOND = 50_000 * 11 / 31.7
WIDE = 31.7 / 113.6


def test_the_paper_grid_without_measurements_is_the_shipped_estimate_evaluation_included(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main(["plan", "--configfile", str(ROOT / "config.yaml"), "--workflow-profile", str(ROOT / "profiles" / "slurm")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[3] == "GPU-h"
    rule = next(i for i, line in enumerate(lines) if line.startswith("---"))
    rows = {tuple(line.split()[:2]): line.split() for line in lines[1:rule]}
    estimate = ["estimate", "(shipped", "rates", "from", f"{SHIPPED})"]
    assert len(rows) == 24 and all(cells[4:] == estimate for cells in rows.values())
    # standard AutoAttack at 2 images/s (ResNet-18, 32²) on every test image: SVHN's 26 032, TinyImageNet's 10 000
    # of 64² (4 x the pixels) on WRN-34-10
    assert float(rows["svhn", "aa"][3]) == pytest.approx(27 * 26_032 / 2 / 3600, abs=0.01)
    assert float(rows["tinyimagenet200", "aa"][3]) == pytest.approx(27 * 10_000 / (2 * WIDE / 4) / 3600, abs=0.01)
    # the release's AutoAttack (the paper comparison's protocol) at 0.51 of standard AA's time
    assert float(rows["svhn", "aa_release"][3]) == pytest.approx(27 * 26_032 * 0.51 / 2 / 3600, abs=0.01)
    # PGD-20 (20 steps + a forward) on CIFAR-10's 10 000, main table and experiments; the curve on 1 000 images
    assert float(rows["cifar10", "pgd20"][3]) == pytest.approx(46 * 10_000 * 20.33 / PASSES_PER_SECOND / 3600, abs=0.01)
    assert rows["cifar10", "curve"][2] == "9" and float(rows["cifar10", "curve"][3]) == pytest.approx(
        9 * 1000 * 358 / PASSES_PER_SECOND / 3600, rel=0.01)
    total = lines[-1]
    assert total.startswith("total: 597 jobs, ≈ ") and " GPU-h: estimate (24 of 24 rows from the shipped rates)" in total
    assert float(total.split("≈ ")[1].split()[0]) == pytest.approx(
        sum(float(cells[3]) for cells in rows.values()), abs=0.05)


def test_evaluation_totals_equal_a_hand_computation_from_the_shipped_rates(g):
    """The test grid's ResNet-18 runs evaluated at the shipped rates: natural and PGD-20 on 10 k images, AutoAttack
    on evaluation.aa_n_examples (100); digits' small CNN has no shipped rate, and says so."""
    rows = rows_by_key(plan.plan(g, estimate=plan.shipped_estimate()))
    assert rows["cifar10", "natural"].gpu_hours == pytest.approx(4 * 10_000 * 0.33 / PASSES_PER_SECOND / 3600)
    assert rows["cifar10", "pgd20"].gpu_hours == pytest.approx(4 * 10_000 * 20.33 / PASSES_PER_SECOND / 3600)
    assert rows["cifar10", "aa"].gpu_hours == pytest.approx(4 * 100 / 2.0 / 3600)
    # CIFAR-10, 4 epochs of 31.7 s (2 warm-up + 2 PART): AT 4 x 31.7; PART s=1 the same + 2 refreshes of 4 s
    assert rows["cifar10", "train"].gpu_hours == pytest.approx(2 * (4 * 31.7 + 4 * 31.7 + 2 * 4.0) / 3600)
    assert rows["digits", "aa"].gpu_hours is None
    assert rows["digits", "aa"].source == "no measurement; no shipped rate for model 'small_cnn'"
    assert rows["total", "all"].source.startswith("estimate (4 of 8 rows from the shipped rates): lower bound")


def test_the_releases_autoattack_has_a_rate_and_an_unknown_attack_says_so(g):
    estimate = plan.shipped_estimate()
    assert estimate.attack_rates["resnet18", "aa_release"] == pytest.approx(2.0 / 0.51)
    assert estimate.attack_rates["wrn34_10", "aa"] == pytest.approx(2.0 * WIDE)
    without_aa = plan.Throughput(estimate.source, estimate.what, estimate.basis,
                                 {k: v for k, v in estimate.attack_rates.items() if k[1] != "aa"}, estimate=True)
    rows = rows_by_key(plan.plan(g, estimate=without_aa))
    assert rows["cifar10", "aa"].gpu_hours is None and rows["cifar10", "aa"].source.endswith("no shipped rate for attack 'aa'")
    assert rows["cifar10", "pgd20"].gpu_hours is not None


def test_a_file_of_other_attack_steps_is_rescaled_with_a_warning(g, tmp_path, capsys):
    """Measured with a 2-step attack, an AT epoch is 3 passes per image; the grid's 10 steps are 11: × 11/3."""
    two = plan.load_throughput(write(tmp_path / "two.json", {**TRAIN, "args": {**TRAIN["args"], "steps": 2}}))
    ten = plan.load_throughput(write(tmp_path / "ten.json", TRAIN))
    run = g.runs["cifar10/resnet18/at/seed0"]
    assert two.train_seconds(run.config) == pytest.approx(ten.train_seconds(run.config) * 11 / 3) == 400 * 11 / 3
    part = g.runs["cifar10/resnet18/part_s1/seed0"].config  # refreshes have no attack: not rescaled
    assert two.train_seconds(part) == pytest.approx((2 * 100 + 2 * 110) * 11 / 3 + 2 * 20)
    assert plan.check_files(g, [ten]) == []
    [warning] = plan.check_files(g, [two])
    assert warning.startswith(f"{two.source}: attack steps 2 measured, the grid's cifar10 runs attack with 10: ")
    assert "× 3.67" in warning
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(json.dumps({**CONFIG, "results_dir": str(tmp_path / "results")}))
    main(["plan", "--configfile", str(cfg), "--throughput", str(tmp_path / "two.json")])
    assert f"part plan: warning: {warning}" in capsys.readouterr().err


def test_a_file_of_other_channels_is_refused_and_other_classes_warned(g, tmp_path, capsys):
    gray = write(tmp_path / "gray.json", {**TRAIN, "args": {**TRAIN["args"], "channels": 1}})
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(json.dumps({**CONFIG, "results_dir": str(tmp_path / "results")}))
    with pytest.raises(SystemExit) as exit:
        main(["plan", "--configfile", str(cfg), "--throughput", str(gray)])
    assert exit.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"part plan: error: {gray}: channels 1 measured, the grid's cifar10 has 3") and "\n" not in err
    wide = plan.load_throughput(write(tmp_path / "c100.json", {**TRAIN, "args": {**TRAIN["args"], "classes": 100}}))
    assert plan.check_files(g, [wide]) == [f"{wide.source}: classes 100 measured, the grid's cifar10 has 10: used "
                                           "unscaled (only the last layer sees them)"]
    assert plan.plan(g, [wide])[4].gpu_hours == pytest.approx(CIFAR_TRAIN_SECONDS / 3600)


def test_the_slurm_profiles_jobs_are_the_dry_runs(tmp_path):
    """``--workflow-profile profiles/slurm`` counts the GPU jobs ``snakemake -n`` plans with that profile, per rule."""
    cfg = {**copy.deepcopy(CONFIG), "results_dir": str(tmp_path / "results"), "seeds": [0, 1],
           "data": {"raw_dir": str(tmp_path / "raw"), "prepared_dir": str(tmp_path / "prepared"), "mirror": None}}
    cfg["evaluation"]["robustness_curve"] = {"variants": ["part_s1"], "seeds": [0], "n_examples": 100}
    cfg["evaluation"]["sanity"] = {"variants": None, "seeds": [1], "n_examples": 100}
    (tmp_path / "grid.yaml").write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--workflow-profile", str(ROOT / "profiles" / "slurm"),
                           "--snakefile", str(ROOT / "Snakefile"), "--configfile", str(tmp_path / "grid.yaml"),
                           "--directory", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    planned = Counter(re.findall(r"^(?:local)?rule (\w+):", proc.stdout + proc.stderr, re.M))
    g = grid.load(plan.with_profile(cfg, ROOT / "profiles" / "slurm"))
    assert g.eval_jobs == "per_attack"
    counted = Counter()
    for dataset in g.datasets:
        for stage, runs in plan.stages(g, dataset):
            counted[stage.rule] += len(runs)
    compute = {rule: n for rule, n in planned.items() if grid.compute_resource(g.cfg, rule) is not None}
    assert counted == compute and set(counted) == {"train", "evaluate", "evaluate_check"}
    assert plan.plan(g)[-1].jobs == sum(compute.values()) == 9 + (8 * 3 + 1 * 2) + (2 + 4) == 41


def test_the_documented_plan_is_what_part_plan_prints(tmp_path, capsys, monkeypatch):
    """docs/cost.md shows `part plan --configfile config.yaml` of a fresh clone: the same shipped rates."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.yaml").write_text((ROOT / "config.yaml").read_text())
    main(["plan", "--configfile", "config.yaml"])
    doc = (ROOT / "docs" / "cost.md").read_text()
    block = doc[doc.index("<!-- plan:begin -->"):doc.index("<!-- plan:end -->")]
    assert block == f"<!-- plan:begin -->\n```text\n{capsys.readouterr().out}```\n"
