"""Shared fixtures: a prepared digits file made once per test session, tiny seeded models, and one finished
run of a tiny workflow grid that the workflow tests copy instead of each running their own."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from part.data.prepared import prepare_digits, save_prepared


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    save_prepared(root / "digits.pt", prepare_digits())
    return root


class TinyNet(nn.Module):
    """A two-layer conv net with batch norm: small enough for exact, fast attack tests."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

    @property
    def cam_layer(self) -> nn.Module:
        return self.features

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return TinyNet().eval()


ROOT = Path(__file__).resolve().parents[1]
DEMO = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
"""The demo's workflow config (configs/demo.yaml); copy it before changing it."""
DEMO_RUN = DEMO["run"]
NARROW = DEMO_RUN["width"]
"""The demo's small_cnn width (8; the digits default is 32): a small part of the convolutions' cost. Tests whose
assertions do not depend on the width train at it."""
NARROW_LR = DEMO_RUN["optim"]["lr"]
"""The demo's learning rate, which makes up for the narrow net within a few epochs: tests that assert that a
narrow run learns train with it."""


def tiny_grid(workdir: Path) -> list[str]:
    """A two-variant, two-seed digits grid (4 short runs of the demo's narrow small_cnn, natural + PGD-20 + AA on
    10 images), the robustness curve and the sanity checks of seed 0 at toy size, an experiment that reuses both
    variants: every kind of job and of table and figure file a grid without best/EMA weights has. The Snakemake
    arguments that run it in ``workdir``."""
    cfg = copy.deepcopy(DEMO)
    cfg["variants"] = {k: cfg["variants"][k] for k in ("at", "part_s1")}
    cfg["run"] = {"device": "cpu", "width": NARROW, "epochs": 5, "warmup_epochs": 2}
    cfg["evaluation"].update(attacks=["natural", "pgd20", "aa"], n_examples=100, aa_n_examples=10,
                             compare_checkpoints=[], robustness_curve={"n_examples": 40, "eps_255": [0, 12, 24]},
                             sanity={"n_examples": 20, "steps": 5, "restarts": 1, "apgd_iter": 5, "square_queries": 50})
    cfg["experiments"] = {"pair": {"title": "AT and PART", "variants": {"at": "at", "part_s1": "part_s1"}}}
    workdir.mkdir(parents=True)
    (workdir / "grid.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copytree(ROOT / "profiles", workdir / "profiles")
    return ["--cores", "2", "--snakefile", str(ROOT / "Snakefile"), "--configfile", "grid.yaml"]


@pytest.fixture(scope="session")
def tiny_workflow(tmp_path_factory) -> tuple[Path, list[str]]:
    """The tiny grid run once, uninterrupted, with the documented command (``make demo``'s); tests copy the
    directory (``shutil.copytree``) before changing anything in it."""
    workdir = tmp_path_factory.mktemp("tiny_workflow") / "run"
    args = tiny_grid(workdir)
    proc = subprocess.run([sys.executable, "-m", "part.workflow.workflow_lock", *args], cwd=workdir, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return workdir, args
