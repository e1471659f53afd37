"""benchmarks/device_check.py in its --device cpu --tiny mode: every stage runs, so the GPU check cannot rot.

The check's value is on a GPU, where nobody can run it in CI; here it runs end to end on tiny sizes and the
JSON is held to its structure: every stage ok, every runnable smoke combination passed (finite loss,
budgets respected, bit-exact resume through part.train), the CPU-only skips recorded with their reason.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["smoke", "speed", "refresh", "wide", "autoattack", "distributed"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("device_check")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "device_check.py"), "--out", str(out),
                           "--device", "cpu", "--tiny"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (out / "summary.txt").read_text() == proc.stdout
    return json.loads((out / "device_check.json").read_text())


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
