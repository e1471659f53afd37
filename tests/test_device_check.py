"""benchmarks/device_check.py in its --device cpu --tiny mode: every stage runs, so the GPU check cannot rot.

The check's value is on a GPU, where nobody can run it in CI; here it runs end to end on tiny sizes and the
JSON is held to its structure: every stage ok, every runnable smoke combination passed (finite loss,
budgets respected, bit-exact resume through part.training.train), the CPU-only skips recorded with their reason.
Its own verdicts are not taken on trust: with ``--keep`` it leaves its datasets and runs on disk, and the
tests below compare the weights, logs and accuracies it reports with those files, and re-run each smoke
combination's epochs here with their own check of every training example's budget.
"""

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from part.base import config
from part.base.torchfiles import load_torch
from part.data.prepared import load_prepared
from part.models import build_model
from part.training.train import build_engine, run_epoch

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["smoke", "speed", "refresh", "wide", "autoattack", "distributed"]


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> tuple[dict, Path]:
    """The tiny check's JSON, and the directory of the files it worked on (``--keep``). Its time budget is wide:
    a stage that runs out of it skips combinations, which a loaded machine must not turn into a failure."""
    out = tmp_path_factory.mktemp("device_check")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--out", str(out),
                           "--device", "cpu", "--tiny", "--keep", "--budget-seconds", "3600"], capture_output=True,
                          text=True, timeout=3600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "summary.txt").read_text() == proc.stdout
    return json.loads((out / "device_check.json").read_text()), out / "work"


@pytest.fixture(scope="module")
def report(checked) -> dict:
    return checked[0]


def ran_smoke(report: dict) -> list[dict]:
    return [c for c in report["stages"]["smoke"]["result"]["combinations"] if c["status"] != "skipped"]


def log_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_every_stage_ran_and_is_recorded(report):
    assert sorted(report["stages"]) == sorted(STAGES)  # write_json sorts keys
    for name, stage in report["stages"].items():
        assert stage["status"] == "ok", f"{name}: {stage.get('traceback')}"
        assert stage["seconds"] > 0 and stage["budget_seconds"] > 0
    assert report["tiny"] and report["device"] == "cpu" and "extrapolation" in report


def test_every_runnable_smoke_combination_passed(report):
    smoke = report["stages"]["smoke"]["result"]
    ran = [c for c in smoke["combinations"] if c["status"] != "skipped"]
    assert sorted(c["method"] for c in ran) == sorted(["at", "trades", "mart", "part", "part_trades", "part_mart"])
    assert {(c["precision"], c["compile"]) for c in ran} == {("fp32", "none")}
    assert smoke["all_passed"] and smoke["passed"] == 6 and smoke["skipped"] == 6 * 2 * 4 - 6
    for c in ran:
        result = c["result"]
        assert all(result["checks"].values()), (c["method"], result["checks"])
        assert result["resume"]["interrupted"] and result["resume"]["relative_l2"] == 0.0
        # PART's resumed second epoch projects onto the maps checkpointed before the kill, recomputing none
        assert result["resume"]["refreshed"] == ([True, False] if c["method"].startswith("part") else [False, False])
        assert result["bounds"]["max_delta_over_eps_map"] <= result["bounds"]["tolerance"]
        assert result["syncs_in_batch_loop"] is None  # counted on CUDA only
    skipped = [c for c in smoke["combinations"] if c["status"] == "skipped"]
    assert all("CUDA" in c["reason"] for c in skipped)


def test_speed_refresh_and_autoattack_measured_something(report):
    stages = report["stages"]
    speed = [m for m in stages["speed"]["result"]["measurements"] if m["status"] == "ok"]
    assert {m["method"] for m in speed} == {"at", "part", "trades", "mart"}
    part = next(m for m in speed if m["method"] == "part")["result"]
    assert 0 < part["refresh_seconds"] < part["seconds"]
    assert part["epoch_seconds_50k"] == pytest.approx(part["seconds"] * 50_000 / part["images_timed"])
    refresh = stages["refresh"]["result"]
    assert refresh["per_image_loop"]["status"] == "ok" and refresh["batched_over_loop_speedup"] > 0
    aa = stages["autoattack"]["result"]["digits"]
    assert aa["status"] == "ok" and [b["batch_size"] for b in aa["result"]["per_batch_size"]] == [10, 5]
    assert all(b["images_per_second"] > 0 for b in aa["result"]["per_batch_size"])


def test_the_multi_process_path_trained_with_two_gloo_processes(report):
    ddp = report["stages"]["distributed"]["result"]
    assert ddp["passed"] and ddp["processes_recorded"] == 2 and ddp["backend"] == "gloo", ddp["output_tail"]


def test_tiny_mode_measures_no_target_and_no_cost_basis(report):
    assert [t["name"] for t in report["targets"]] == ["at_epoch", "refresh", "part_over_at", "wide_epoch", "aa_10k"]
    assert {t["status"] for t in report["targets"]} == {"not measured"}
    assert report["cost_basis"] is None


def test_the_resumes_it_reports_bit_exact_are_on_disk(checked):
    """Each smoke combination's uninterrupted and killed-then-resumed runs, read back: every tensor equal, and
    the resumed PART epoch refreshing nothing (it projected onto the maps the killed run had checkpointed)."""
    report, work = checked
    for c in ran_smoke(report):
        runs = work / "resume" / f"{c['method']}-{c['precision']}-{c['compile']}"
        whole, cut = load_torch(runs / "whole" / "model.pt"), load_torch(runs / "cut" / "model.pt")
        assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole), c["method"]
        part = c["method"].startswith("part")
        assert [r["refreshed"] for r in log_of(runs / "cut")] == [part, False], c["method"]
        assert [r["refreshed"] for r in log_of(runs / "whole")] == [part, False], c["method"]


def test_the_smoke_epochs_rerun_here_give_its_losses_and_keep_every_example_in_its_budget(checked):
    """The watched epochs of each combination again, with this test's own check of each training example
    (|x' - x| within its ε or ε-map, x' in [0, 1]) in place of the check's BoundsWatch; their losses are the
    ones the JSON reports, and the ones the uninterrupted run of the same config logged (finite, all three)."""
    report, work = checked
    data = load_prepared(work / "smoke" / "digits.pt")
    for c in ran_smoke(report):
        run = work / "resume" / f"{c['method']}-{c['precision']}-{c['compile']}" / "whole"
        cfg = config.from_dict(json.loads((run / "config.json").read_text()))
        engine = build_engine(cfg, data.train, data.num_classes, torch.device("cpu"))
        seen = []

        def checked_attack(model, x, y, eps=None, generator=None, attack=engine.attack, cfg=cfg):
            x_adv = attack(model, x, y, eps=eps, generator=generator)
            budget = torch.as_tensor(cfg.attack.eps if eps is None else eps)
            assert ((x_adv - x).abs() <= budget + 1e-6).all() and x_adv.min() >= 0 and x_adv.max() <= 1, c["method"]
            seen.append(sorted(budget.unique().tolist()))
            return x_adv

        losses = [run_epoch(replace(engine, attack=checked_attack), epoch)["loss"] for epoch in range(cfg.epochs)]
        assert losses == c["result"]["losses"] == [r["loss"] for r in log_of(run)], c["method"]
        assert all(math.isfinite(v) for v in losses), c["method"]
        eps, eps_low = (torch.tensor(v, dtype=torch.float32).item() for v in (cfg.attack.eps, cfg.attack.eps_low))
        if c["method"].startswith("part"):  # ε-maps: every pixel at ε_low or ε, and some at each
            assert seen and all(set(values) <= {eps_low, eps} for values in seen), (c["method"], seen)
            assert {v for values in seen for v in values} == {eps_low, eps}, c["method"]
        else:
            assert seen and all(values == [pytest.approx(cfg.attack.eps)] for values in seen), c["method"]


def test_the_autoattack_accuracies_it_reports_are_those_of_the_model_it_trained(checked):
    """Natural accuracy on the attacked images, from the kept model by a forward pass here; AutoAttack's
    accuracy can only be lower."""
    report, work = checked
    aa = report["stages"]["autoattack"]["result"]["digits"]["result"]
    cfg = config.from_dict(json.loads((work / "aa-run-digits" / "config.json").read_text()))
    data = load_prepared(work / "aa-digits" / "digits.pt")
    model = build_model(cfg.model, data.num_classes, data.image_shape[0], cfg.width)
    model.load_state_dict(load_torch(work / "aa-run-digits" / "model.pt"))
    x, y = data.test.images[: aa["images"]].float() / 255, data.test.labels[: aa["images"]]
    with torch.no_grad():
        natural = (model.eval()(x).argmax(1) == y).float().mean().item() * 100
    for measured in aa["per_batch_size"]:
        assert measured["natural_accuracy"] == pytest.approx(natural)
        assert measured["robust_accuracy"] <= measured["natural_accuracy"]


def test_the_two_process_run_left_finite_weights_and_the_loss_it_reports(checked):
    report, work = checked
    ddp = report["stages"]["distributed"]["result"]
    weights = load_torch(work / "ddp-run" / "model.pt")
    assert weights and all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    history = log_of(work / "ddp-run")
    assert len(history) == 2 and ddp["final_loss"] == history[-1]["loss"] and math.isfinite(ddp["final_loss"])
