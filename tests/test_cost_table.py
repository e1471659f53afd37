"""benchmarks/cost_table.py against a hand computation on a hand-made device-check JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import cost_table  # noqa: E402

REPORT = {
    "tiny": False, "device_name": "NVIDIA H200", "created": "2026-11-20T10:00:00+0000",
    "stages": {"speed": {"status": "ok", "result": {"attack_steps": 10}}},
    "environment": {"git_revision": "abc123"},
    "cost_basis": {
        "resnet18": {"setting": "batch 128, bf16, compile max-autotune", "at_epoch_seconds_50k": 10.0,
                     "part_train_over_at": 1.0, "refresh_over_at": 0.1, "trades_over_at": 1.2, "mart_over_at": 1.5},
        "wrn34_10": {"setting": "batch 128, bf16, compile none", "at_epoch_seconds_50k": 100.0},
    },
}
# CIFAR-10, 80 epochs (20 warm-up + 60 PART), AT epoch 10 s, PART epoch 10 s + refresh 1 s:
#   AT 800; PART s=1: 200 + 600 + 60 = 860; s=10 (7 refreshes, the release's schedule): 807;
#   TRADES (12 s): 960, 240 + 720 + 60 = 1020, 967; MART (15 s): 1200, 300 + 900 + 60 = 1260, 1207.
CIFAR_SEEDS_SECONDS = 800 + 860 + 807 + 960 + 1020 + 967 + 1200 + 1260 + 1207  # 9081 per seed


@pytest.fixture
def rows():
    grid_cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    return {r["dataset"]: r for r in cost_table.table_rows(grid_cfg, cost_table.Basis.from_report(REPORT))}


def test_cifar_runs_equal_the_hand_computation(rows):
    cifar = rows["cifar10"]
    assert cifar["at_hours"] == pytest.approx(800 / 3600)
    assert cifar["part_hours"] == pytest.approx(860 / 3600)
    assert cifar["runs"] == 27
    assert cifar["grid_hours"] == pytest.approx(3 * CIFAR_SEEDS_SECONDS / 3600)


def test_datasets_scale_by_training_images_and_pixels(rows):
    assert rows["svhn"]["grid_hours"] == pytest.approx(rows["cifar10"]["grid_hours"] * 73_257 / 50_000)
    # WRN-34-10: 100 s per 50 k 32² epoch -> 100 k 64² images: 800 s; 80 epochs
    assert rows["tinyimagenet200"]["at_hours"] == pytest.approx(80 * 800 / 3600)
    assert rows["tinyimagenet200"]["part_hours"] == pytest.approx((20 * 800 + 60 * 800 + 60 * 80) / 3600)


def test_experiments_cost_their_own_runs(rows):
    grid_cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    g = cost_table.grid.load(grid_cfg)
    n = len(g.runs) - len(g.main)
    assert rows["experiments"]["runs"] == n > 0
    # CIFAR-10 AT-family runs: quadrant ones (80 PART epochs, no CAM) cost 800 s, the others at most PART s=1's
    assert n * 800 / 3600 <= rows["experiments"]["grid_hours"] <= n * 860 / 3600 + 1e-9


def test_the_readme_section_is_rewritten_between_its_markers(tmp_path):
    (tmp_path / "report.json").write_text(json.dumps(REPORT))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{cost_table.BEGIN}\nold estimate\n{cost_table.END}\nafter\n")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cost_table.py"), "--json",
                          str(tmp_path / "report.json"), "--config", str(ROOT / "config.yaml"), "--readme", str(readme)],
                         capture_output=True, text=True, check=True, cwd=ROOT).stdout
    text = readme.read_text()
    assert "old estimate" not in text and text.startswith("# x\n\nbefore\n") and text.endswith(f"{cost_table.END}\nafter\n")
    assert out in text
    assert f"| CIFAR-10 (ResNet-18), 50 k × 32² | {800 / 3600:.2f} h | {860 / 3600:.2f} h | " \
           f"≈ {3 * CIFAR_SEEDS_SECONDS / 3600:.1f} GPU-h |" in text
    assert "NVIDIA H200" in text and "27 runs (9 variants × 3 seeds)" in text


def test_the_documented_cost_table_has_its_markers():
    """docs/cost.md holds the project's cost table: the file the documented --readme command rewrites."""
    text = (ROOT / "docs" / "cost.md").read_text()
    assert text.count(cost_table.BEGIN) == 1 and text.count(cost_table.END) == 1
    assert text.index(cost_table.BEGIN) < text.index(cost_table.END)
    assert "--readme docs/cost.md" in text and "--readme docs/cost.md" in cost_table.__doc__


def test_a_tiny_report_has_no_cost_basis():
    with pytest.raises(ValueError, match="--tiny"):
        cost_table.Basis.from_report({"tiny": True, "cost_basis": None})
