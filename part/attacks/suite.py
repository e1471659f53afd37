"""The evaluation's attacks as data, and a model's per-example correctness under one of them, in batches.

One home below every user: the evaluation (``part.evaluation.evaluate``), its robustness curve and sanity checks
(``part.evaluation.curve``, ``part.evaluation.sanity``) and training's validation of the best checkpoint (``part.training.train``) all
attack at the dataset's evaluation budget with the same specs and count correct images the same way, so
a validation's PGD is the table's PGD-20 with fewer steps and the curve's ε_eval point is the table's PGD-20.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from part.attacks.autoattack_adapter import MM3, RELEASE_AA_CLASSES, ReleaseAutoAttack
from part.attacks.pgd import MMA, PGD, Attack
from part.base.config import DATASET_DEFAULTS, DEFAULTS, deep_merge, parse_budget
from part.base.runtime import eval_mode
from part.data.prepared import Split

BATCH_SIZE = 500
"""Images per attack batch when none is given (CLI, workflow and engine alike)."""


def evaluation_budget(dataset: str) -> tuple[float, float]:
    """(ε, α) of the evaluation: the dataset's default training budget, not the run's own.

    Every model of a dataset is then measured at the same budget, including ablations trained with
    another ε: 8/255 with α = 2/255 (SVHN 1/255) for the paper's data sets, part.base.config's MNIST-style
    budgets for the small grey-scale ones.
    """
    if dataset not in DATASET_DEFAULTS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(DATASET_DEFAULTS)}")
    attack = deep_merge(DEFAULTS, DATASET_DEFAULTS[dataset])["attack"]
    return parse_budget(attack["eps"]), parse_budget(attack["alpha"])


def attack_specs(eps: float, alpha: float, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Every evaluation attack by name, as plain data (fra31 style): what runs is what gets recorded."""
    ball = {"norm": "Linf", "eps": eps, "eps_255": eps * 255}
    return {
        "natural": {"kind": "natural"},
        "pgd20": {"kind": "pgd", **ball, "alpha": alpha, "steps": 20, "loss": "ce", "start": "uniform",
                  "restarts": 1, "seed": seed},
        "mma": {"kind": "mma", "variant": "PART release: sign steps per target, keep the largest final margin",
                **ball, "alpha": alpha, "steps": 20, "k": 3, "confidence": 50.0, "start": "uniform",
                "restarts": 1, "seed": seed},
        "mm3": {"kind": "mm3", "variant": "Gao et al. 2022: targeted APGD on the margin, targets in turn",
                **ball, "steps": 20, "k": 3, "confidence": 50.0, "rho": 0.75, "restarts": 1, "seed": seed},
        "aa": {"kind": "autoattack", "version": "standard", **ball, "seed": seed},
        "aa_release": {"kind": "torchattacks_autoattack", "version": "standard", **ball, "seed": seed,
                       "n_classes": RELEASE_AA_CLASSES},
    }


def build_attack(spec: dict[str, Any]) -> Attack | None:
    """The per-batch attack of a spec of :func:`attack_specs` (None for ``natural``)."""
    kind = spec["kind"]
    if kind == "natural":
        return None
    if kind == "pgd":
        return PGD(spec["eps"], spec["alpha"], spec["steps"], loss=spec["loss"], start=spec["start"])
    if kind == "mma":
        return MMA(spec["eps"], spec["alpha"], steps=spec["steps"], k=spec["k"], confidence=spec["confidence"])
    if kind == "mm3":
        return MM3(spec["eps"], steps=spec["steps"], k=spec["k"], confidence=spec["confidence"], seed=spec["seed"])
    if kind == "torchattacks_autoattack":
        return ReleaseAutoAttack(spec["eps"], seed=spec["seed"], n_classes=spec["n_classes"])
    raise ValueError(f"attack kind {kind!r} has no per-batch implementation")


def batched_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack | None,
                    batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
    """Bool (N,): is image i of ``x`` (float, [0, 1], on the model's device) classified as ``y[i]`` after
    ``attack`` (None: as it is), attacked ``batch_size`` images at a time; the caller sets the model's mode."""
    out = []
    for start in range(0, len(y), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        if attack is not None:
            xb = attack(model, xb, yb, generator=generator)
        with torch.no_grad():
            out.append(model(xb).argmax(1) == yb)
    return torch.cat(out)


def correct_per_example(model: nn.Module, split: Split, attack: Attack | None = None, *, batch_size: int = BATCH_SIZE,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool (N,) on the model's device: is example i classified correctly (after ``attack``, if given)?

    The model is evaluated in eval mode (restored afterwards); the split moves to the device once,
    so one evaluation costs a single host transfer each way.
    """
    device = next(model.parameters()).device
    with eval_mode(model):
        x = split.images.to(device).float().div_(255)
        return batched_correct(model, x, split.labels.to(device), attack, batch_size, generator)


def check_inputs(x: torch.Tensor) -> None:
    """Refuse images outside [0, 1], where the ε-balls and the attacks' clipping are defined."""
    if x.min() < 0 or x.max() > 1:
        raise ValueError(f"inputs span [{x.min().item():.3g}, {x.max().item():.3g}]; the ε-balls and the attacks' "
                         "clipping are defined for images in [0, 1] (normalise inside the model)")
