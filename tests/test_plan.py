"""part.plan (``part plan``) against hand computations from hand-written throughput files and run directories."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from part import grid, plan
from part.cli import main
from part.config import from_dict

ROOT = Path(__file__).resolve().parents[1]

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
                                          "precision": "bf16", "compile": "none"}}
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
    assert cifar_train.source == files[0].source
    # evaluation: 4 CIFAR-10 jobs of 10 k images at 50 images/s; digits: 360 test images (AutoAttack: 100)
    assert rows["cifar10", "pgd20"].gpu_hours == pytest.approx(4 * 10_000 / 50 / 3600)
    assert rows["cifar10", "aa"].gpu_hours == pytest.approx(4 * 100 / 20 / 3600)
    assert rows["cifar10", "aa"].source == files[3].source
    assert rows["digits", "natural"].gpu_hours == pytest.approx(5 * 360 / 1000 / 3600)
    assert rows["digits", "pgd20"].gpu_hours == pytest.approx(5 * 360 / 100 / 3600)
    assert rows["digits", "aa"].gpu_hours == pytest.approx(4 * 100 / 10 / 3600)
    assert rows["digits", "aa"].source == files[1].source


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
    assert rows["cifar10", "train"].source == f"runs (1 measured), {files[0].source} (3 jobs)"
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


def test_compared_checkpoints_are_one_job_per_main_run(tmp_path, files):
    cfg = {**copy.deepcopy(CONFIG), "results_dir": str(tmp_path / "results")}  # no runs: the files' rates alone
    cfg["run"]["validation"] = {"size": 100, "every": 1, "steps": 2}
    cfg["evaluation"]["compare_checkpoints"] = ["best"]
    rows = rows_by_key(plan.plan(grid.load(cfg), files))
    row = rows["digits", "natural+pgd20 (best)"]
    assert row.jobs == 4 and row.gpu_hours == pytest.approx(4 * (360 / 1000 + 360 / 100) / 3600)
    assert rows["cifar10", "natural+pgd20 (best)"].gpu_hours is None  # no ResNet-18 natural rate


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
    report = {"tiny": False, "device": "cuda", "device_name": "NVIDIA H200", "cost_basis": {
        "resnet18": {"setting": "s", "at_epoch_seconds_50k": 10.0, "part_train_over_at": 1.0, "refresh_over_at": 0.1,
                     "trades_over_at": 1.2, "mart_over_at": 1.5},
        "wrn34_10": {"setting": "s", "at_epoch_seconds_50k": 100.0}}}
    main(["plan", "--configfile", str(ROOT / "config.yaml"), "--throughput", str(write(tmp_path / "dc.json", report))])
    lines = capsys.readouterr().out.splitlines()
    train = {line.split()[0]: line.split() for line in lines if len(line.split()) > 1 and line.split()[1] == "train"}
    assert set(train) == {"cifar10", "svhn", "tinyimagenet200"}
    # SVHN: no experiments, 3 seeds of tests/test_cost_table.py's 9081 s per seed scaled by 73,257 / 50,000 images
    assert train["svhn"][2:4] == ["27", f"{3 * 9081 * 73_257 / 50_000 / 3600:.2f}"]
    assert train["svhn"][4].endswith("dc.json")
    assert any(line.startswith("total") for line in lines) and lines[-1].startswith("sources: runs = ")
    assert lines[0].split()[3] == "GPU-h" and "dc.json = device_check on cuda (NVIDIA H200) [GPU-h]" in lines[-1]
    # one job per run for all four attacks (config.yaml's evaluation.jobs): no natural rate, no number
    assert sum(1 for line in lines if " natural+pgd20+mma+aa " in line and line.rstrip().endswith("no measurement")) == 3


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
    assert f"{files[1].source} = eval_throughput small_cnn on cpu [CPU-h]" in legend
    assert f"{files[3].source} = device_check on cuda (NVIDIA H200) [GPU-h]" in legend
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
              "args": {**TRAIN["args"], "model": "small_cnn", "size": 8, "precision": "fp32"}}
    main(["plan", "--configfile", str(ROOT / "configs" / "demo.yaml"), "--throughput",
          str(write(tmp_path / "tt.json", report))])
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[3] == "CPU-h" and "GPU-h" not in out
    assert "tt.json = train_throughput small_cnn on cpu (AMD EPYC) [CPU-h]" in out
