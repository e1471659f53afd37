"""The robustness curve of one model: accuracy against ℓ∞ PGD for a list of budgets ε, plus one large ε
at which every model must fall to ≈ 0 % (an evaluation check of docs/evaluation_checks.md; the check itself
is ``part.evaluation.sanity``'s ``large_eps``).

The settings are data (:func:`curve_spec`), written with the results, from a plain dict — the workflow's
``evaluation.robustness_curve`` block::

    {"eps_255": [0, 1, 2, 4, 6, 8, 10, 12, 16], "large_eps_255": 64, "n_examples": 1000, "steps": 20, "seed": 0}

Every key may be left out. ``eps_255`` defaults to the list above for the 8/255 datasets and to it scaled by
ε_eval / (8/255) for the others (the digits' 48/255 gives 0, 6, 12, ..., 96); ``large_eps_255`` to 8 ε_eval
(64/255 on CIFAR-10), at most 255 (the whole image box).

The attack at each ε is the evaluation's PGD (cross-entropy, uniform random start, sign steps) with its
step size scaled with ε and its steps growing beyond the evaluation budget:

    α(ε) = α_eval · ε / ε_eval,        steps(ε) = ⌈steps · max(1, ε / ε_eval)⌉

so at ε = ε_eval it *is* the table's PGD-20 (same α, steps and seed: the same per-example flags), a small
ε gets proportionally small steps (20 steps of ε/4 still cross the ball 2.5 times), and a larger ball gets
more steps to search it (Madry et al. 2018 take α = 2.5 ε / steps; Carlini et al. 2019 ask that an iterative
attack is run until it converges). Each ε restarts the random starts from ``seed`` (a
fresh generator), so a point never depends on which other ε were asked for. ε = 0 is the natural
accuracy, computed without an attack (PGD with ε = 0 projects back onto the input: the same flags).

Per-example flags are kept for every ε — ``eval/curve.correct.npz``: ``correct`` (P, N) bool, ``index`` (N,)
test indices, ``eps_255`` (P,) — so the table's intervals and paired PART − base differences apply per ε
(``part.analysis.curve_table``).

Accuracy must not rise with ε: the ball of a smaller ε lies inside the larger one, so an adversarial example
found at ε_k is one at ε_{k+1}. Each ε is attacked on its own, so the curve may rise by noise; the result
records, per step, how many examples were broken at the smaller ε but not at the larger one (``inversions``):
each is an attack failure at the larger ε (Carlini et al. 2019: accuracy should decrease monotonically as the
budget grows).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from part.attacks.pgd import PGD
from part.attacks.suite import BATCH_SIZE, batched_correct, check_inputs, evaluation_budget
from part.base.runtime import eval_mode, synchronize

NAME = "curve"
DEFAULT_EPS_255 = (0, 1, 2, 4, 6, 8, 10, 12, 16)
"""The curve's budgets (×1/255) for the datasets evaluated at 8/255; others get them scaled to their ε."""
REFERENCE_EPS = 8 / 255
LARGE_EPS_FACTOR = 8
"""The large ε, in units of the evaluation ε, when none is given (64/255 for CIFAR-10)."""
DEFAULT_STEPS = 20
PARAMETERS = ("eps_255", "large_eps_255", "n_examples", "steps", "seed")
"""The keys of the curve's parameter dict (the workflow's ``evaluation.robustness_curve``)."""


def check_parameters(params: dict[str, Any] | None, allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    """``params`` as a dict, refusing keys the engine does not know (a typo would silently run the default)."""
    params = dict(params or {})
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{what}: unknown parameter(s) {unknown}; expected some of {', '.join(allowed)}")
    return params


def curve_spec(dataset: str, params: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """The curve's settings as data: one entry per ε (the large one last) with its α and steps.

    ``params`` is the plain dict of the module docstring; its ``seed`` (default ``seed``) seeds the random
    starts. The ε list is sorted and must hold distinct values below the large ε.
    """
    params = check_parameters(params, PARAMETERS, "robustness curve")
    eps_eval, alpha_eval = evaluation_budget(dataset)
    scale = eps_eval / REFERENCE_EPS
    eps_255 = params.get("eps_255")
    eps_255 = [float(e) for e in (eps_255 if eps_255 is not None else [e * scale for e in DEFAULT_EPS_255])]
    large = params.get("large_eps_255")
    large = float(large if large is not None else min(255.0, LARGE_EPS_FACTOR * eps_eval * 255))
    if not eps_255 or len(set(eps_255)) != len(eps_255) or min(eps_255) < 0:
        raise ValueError(f"robustness curve: eps_255 {eps_255}: expected distinct budgets ≥ 0")
    if large <= max(eps_255) or large > 255:
        raise ValueError(f"robustness curve: large_eps_255 {large:g} must lie above every ε of the curve "
                         f"(max {max(eps_255):g}) and at most 255 (the whole image box)")
    steps = int(params.get("steps", DEFAULT_STEPS))
    if steps < 1:
        raise ValueError(f"robustness curve: steps {steps}: expected ≥ 1")
    n = params.get("n_examples")
    points = [_point(e, eps_eval, alpha_eval, steps, large=False) for e in sorted(eps_255)]
    points.append(_point(large, eps_eval, alpha_eval, steps, large=True))
    return {"kind": "curve", "attack": "pgd", "norm": "Linf", "loss": "ce", "start": "uniform", "restarts": 1,
            "seed": int(params.get("seed", seed)), "n_examples": None if n is None else int(n),
            "eval_eps_255": eps_eval * 255, "eval_alpha_255": alpha_eval * 255, "base_steps": steps,
            "rule": "alpha = alpha_eval * eps / eps_eval; steps = ceil(base_steps * max(1, eps / eps_eval)); "
                    "eps = 0 is natural accuracy (no attack)",
            "points": points}


def _point(eps_255: float, eps_eval: float, alpha_eval: float, steps: int, large: bool) -> dict[str, Any]:
    eps = eps_255 / 255
    same = math.isclose(eps, eps_eval, rel_tol=1e-12)  # exactly the evaluation's PGD at its own budget
    eps = eps_eval if same else eps
    return {"eps_255": eps_255, "eps": eps, "alpha": alpha_eval if same else alpha_eval * eps / eps_eval,
            "steps": 0 if eps == 0 else math.ceil(steps * max(1.0, eps / eps_eval) - 1e-9), "large": large}


@dataclass(frozen=True)
class CurveResult:
    correct: np.ndarray  # bool (P, N): row k = the points' k-th ε
    eps_255: np.ndarray  # (P,)
    seconds: list[float]
    settings: dict[str, Any]

    @property
    def accuracy(self) -> np.ndarray:
        return 100.0 * self.correct.mean(1)

    def inversions(self) -> list[dict[str, Any]]:
        """Per consecutive pair of ε: the examples broken at the smaller one but not at the larger one."""
        return [{"from_eps_255": float(self.eps_255[k]), "to_eps_255": float(self.eps_255[k + 1]),
                 "n": int((self.correct[k + 1] & ~self.correct[k]).sum())} for k in range(len(self.eps_255) - 1)]


def run_curve(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict[str, Any], *,
              batch_size: int = BATCH_SIZE, log: Callable[[str], None] | None = print) -> CurveResult:
    """Per-example correctness of ``model`` on images ``x`` in [0, 1] (on the model's device) at every ε of
    ``spec`` (:func:`curve_spec`). ``x`` is used whole: the caller picks the examples."""
    check_inputs(x)
    device = x.device
    rows, seconds = [], []
    with eval_mode(model):
        for p in spec["points"]:
            synchronize(device)
            t0 = time.perf_counter()
            if p["eps"] == 0:
                correct = batched_correct(model, x, y, None, batch_size, None)
            else:
                generator = torch.Generator(device=device).manual_seed(spec["seed"])
                attack = PGD(p["eps"], p["alpha"], p["steps"], loss=spec["loss"], start=spec["start"])
                correct = batched_correct(model, x, y, attack, batch_size, generator)
            synchronize(device)
            seconds.append(time.perf_counter() - t0)
            rows.append(correct.cpu().numpy())
            if log is not None:
                log(f"[part]   curve ε = {p['eps_255']:g}/255 ({p['steps']} steps): {100 * rows[-1].mean():6.2f}% "
                    f"{seconds[-1]:.1f}s")
    eps_255 = np.array([p["eps_255"] for p in spec["points"]], dtype=float)
    return CurveResult(np.stack(rows).astype(bool), eps_255, seconds, dict(spec))


def entry_fields(result: CurveResult) -> dict[str, Any]:
    """What ``eval/curve.json`` holds beyond the fields every evaluation result has (``part.evaluation.evaluate``)."""
    acc, correct = result.accuracy, result.correct
    points = [{**p, "accuracy": float(a), "n_correct": int(c.sum()), "seconds": s}
              for p, a, c, s in zip(result.settings["points"], acc, correct, result.seconds)]
    natural = [p for p in points if p["eps"] == 0]
    return {"accuracy": [float(a) for a in acc], "eps_255": [float(e) for e in result.eps_255],
            "n_correct": [int(c.sum()) for c in correct], "points": points,
            "natural_accuracy": natural[0]["accuracy"] if natural else None,
            "large_eps_accuracy": points[-1]["accuracy"], "inversions": result.inversions(),
            "seconds": float(sum(result.seconds))}
