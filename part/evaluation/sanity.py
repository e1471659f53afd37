"""Convergence and gradient-masking checks of one model, each a *pass* / *warn* with its numbers.

A robust accuracy is only as good as the attack behind it. These are the checks AutoAttack runs on itself
(``pyautoattack/checks.py``: Croce & Hein, ICML 2020) and those of Carlini et al., *On Evaluating
Adversarial Robustness* (arXiv:1902.06705, 2019, its evaluation checklist; the wording below paraphrases it),
on the table's ε (the dataset's
evaluation budget) and the first ``n_examples`` test images:

* ``convergence`` — more steps and restarts do not help much: PGD-20 against the worst case of PGD-20 and
  PGD-``steps`` with ``restarts`` random restarts (Carlini et al.: verify that the attack has
  converged, apply random restarts). *warn* if the stronger attack lowers the accuracy by more than
  :data:`CONVERGENCE_TOLERANCE` points beyond the test sample's noise: the one-sided 95 % Clopper–Pearson
  lower bound of the share of examples it breaks beyond PGD-20 lies above the tolerance (on a demo's 100–200
  examples one example is 0.5–1 point). No source gives a number; ours is the reproduction tolerance of the
  tables (``part.base.grid.REPRODUCTION_TOLERANCE``), so a check that passes cannot hide a gap the paper
  comparison would call a failed reproduction.
* ``black_box`` — black-box is never stronger than white-box: the Square Attack (gradient-free; the
  official AutoAttack code, its standard settings) against the worst case of the white-box attacks
  (natural, PGD-20, PGD-``steps``×``restarts``, APGD-CE, APGD-DLR) on the same examples. *warn* if Square
  breaks more than :data:`SQUARE_TOLERANCE` % of the examples that every white-box attack left correct:
  AutoAttack's ``check_square_sr`` (alpha = 0.002), applied as there to the drop of the running robust
  accuracy that Square causes; Carlini et al. (gradient-free attacks should not beat gradient-based
  ones). The examples with an all-zero input gradient (AutoAttack's ``check_zero_gradients``) are counted
  beside it.
* ``large_eps`` — an unbounded budget breaks everything: PGD at the curve's large ε (``part.evaluation.curve``'s rule
  for α and steps). *warn* if more than :data:`LARGE_EPS_MAX_ACCURACY` % stay correct (Carlini et al.:
  unbounded attacks should reach 100 % success; 1 % allows for a finite number of steps).
* ``transfer`` — a transfer attack is weaker than the white-box one: PGD-20 adversarial examples of
  another seed's model (``transfer_from``), classified by this one, against the white-box worst case.
  *warn* if the transfer accuracy lies more than :data:`TRANSFER_TOLERANCE` points below it (Carlini et
  al.: a transfer attack that succeeds where white-box attacks fail means the white-box attack is flawed;
  the tolerance is AutoAttack's 0.2 %). *not run* without a source model.

A *warn* says the table's numbers for this model may over-state its robustness (gradient masking, an
attack that has not converged): read its numbers, then evaluate it with stronger or adaptive attacks.
It is a flag for a human, not a verdict. docs/evaluation_checks.md says the same at more length.

Parameters come as a plain dict (the workflow's ``evaluation.sanity``): ``n_examples``, ``steps`` (100),
``restarts`` (5), ``apgd_iter`` (100), ``square_queries`` (5000, standard AutoAttack), ``large_eps_255``
(``part.evaluation.curve``'s default), ``transfer_from`` (a run directory, or None), ``seed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import beta
from torch import nn

from part.attacks.autoattack_adapter import APGD, Square
from part.attacks.pgd import PGD
from part.attacks.suite import BATCH_SIZE, attack_specs, batched_correct, build_attack, check_inputs, evaluation_budget
from part.base.grid import REPRODUCTION_TOLERANCE
from part.base.runtime import eval_mode, synchronize
from part.evaluation.curve import check_parameters, curve_spec

NAME = "sanity"
CHECK_NAMES = ("convergence", "black_box", "large_eps", "transfer")
"""The checks, in the order of the table's columns."""
CONVERGENCE_TOLERANCE = REPRODUCTION_TOLERANCE
"""Points of accuracy a stronger PGD (more steps, restarts) may take off PGD-20 before the check warns."""
CONVERGENCE_LEVEL = 0.95
"""One-sided confidence of the lower bound the convergence check compares with its tolerance."""
SQUARE_TOLERANCE = 0.2
"""% of the examples that Square may break beyond every white-box attack (AutoAttack's check_square_sr: 0.002)."""
LARGE_EPS_MAX_ACCURACY = 1.0
"""% of the examples that may stay correct at the large ε."""
TRANSFER_TOLERANCE = 0.2
"""Points the transfer accuracy may lie below the white-box one (AutoAttack's tolerance for black-box attacks)."""
PARAMETERS = ("n_examples", "steps", "restarts", "apgd_iter", "square_queries", "large_eps_255", "transfer_from",
              "seed")
DEFAULTS = {"steps": 100, "restarts": 5, "apgd_iter": 100, "square_queries": 5000}
PASS, WARN, NOT_RUN = "pass", "warn", "not run"


def sanity_spec(dataset: str, params: dict[str, Any] | None = None, seed: int = 0) -> dict[str, Any]:
    """The checks' settings as data: each attack's spec, the thresholds and their sources."""
    params = {**DEFAULTS, **check_parameters(params, PARAMETERS, "sanity checks")}
    eps, alpha = evaluation_budget(dataset)
    seed = int(params.get("seed", seed))
    ball = {"norm": "Linf", "eps": eps, "eps_255": eps * 255}
    pgd20 = attack_specs(eps, alpha, seed)["pgd20"]
    large = curve_spec(dataset, {"large_eps_255": params.get("large_eps_255")} if params.get("large_eps_255")
                       is not None else {}, seed)["points"][-1]
    n = params.get("n_examples")
    source = params.get("transfer_from")
    return {
        "kind": "sanity", "seed": seed, "n_examples": None if n is None else int(n), **ball,
        "attacks": {
            "pgd20": pgd20,
            "pgd_strong": {**pgd20, "steps": int(params["steps"]), "restarts": int(params["restarts"])},
            "apgd_ce": {"kind": "apgd", **ball, "loss": "ce", "n_iter": int(params["apgd_iter"]), "restarts": 1,
                        "rho": 0.75, "seed": seed, "package": "pyautoattack"},
            "apgd_dlr": {"kind": "apgd", **ball, "loss": "dlr", "n_iter": int(params["apgd_iter"]), "restarts": 1,
                         "rho": 0.75, "seed": seed, "package": "pyautoattack"},
            "square": {"kind": "square", **ball, "n_queries": int(params["square_queries"]), "p_init": 0.8,
                       "restarts": 1, "loss": "margin", "seed": seed, "package": "pyautoattack"},
            "large_eps": {"kind": "pgd", "norm": "Linf", "eps": large["eps"], "eps_255": large["eps_255"],
                          "alpha": large["alpha"], "steps": large["steps"], "loss": "ce", "start": "uniform",
                          "restarts": 1, "seed": seed},
            "transfer": {**pgd20, "source": None if source is None else str(source)},
        },
        "thresholds": {"convergence_points": CONVERGENCE_TOLERANCE, "convergence_level": CONVERGENCE_LEVEL,
                       "square_percent": SQUARE_TOLERANCE,
                       "large_eps_max_accuracy": LARGE_EPS_MAX_ACCURACY, "transfer_points": TRANSFER_TOLERANCE},
        "sources": {
            "convergence": "Carlini et al. 2019 (arXiv:1902.06705), checklist: convergence, restarts; "
                           "tolerance = part.analysis.compare."
                           "REPRODUCTION_TOLERANCE (ours: no source gives a number), on the one-sided "
                           "Clopper-Pearson lower bound of the drop",
            "black_box": "AutoAttack checks.check_square_sr (alpha = 0.002); Carlini et al. 2019, checklist: "
                         "gradient-free attacks",
            "large_eps": "Carlini et al. 2019, checklist: unbounded attacks reach 100 % success",
            "transfer": "Carlini et al. 2019, checklist: transfer attacks; tolerance as AutoAttack's check_square_sr",
        },
    }


@dataclass(frozen=True)
class SanityResult:
    rows: list[str]
    correct: np.ndarray  # bool (R, N), one row per entry of ``rows``
    checks: dict[str, dict[str, Any]]
    seconds: dict[str, float]
    settings: dict[str, Any]

    @property
    def status(self) -> str:
        return WARN if any(c["status"] == WARN for c in self.checks.values()) else PASS

    def accuracy(self) -> dict[str, float]:
        return {r: float(100.0 * c.mean()) for r, c in zip(self.rows, self.correct)}


def zero_gradient_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = BATCH_SIZE) -> int:
    """Examples whose cross-entropy has an all-zero gradient with respect to the input (AutoAttack's
    ``check_zero_gradients``): a gradient attack cannot move them."""
    zero = 0
    with eval_mode(model), torch.enable_grad():
        for start in range(0, len(y), batch_size):
            xb = x[start:start + batch_size].detach().clone().requires_grad_(True)
            loss = F.cross_entropy(model(xb).float(), y[start:start + batch_size], reduction="sum")
            (grad,) = torch.autograd.grad(loss, xb)
            zero += int((grad.flatten(1).abs().sum(1) == 0).sum())
    return zero


def _pct(flags: torch.Tensor) -> float:
    return 100.0 * int(flags.sum()) / len(flags)


def run_sanity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict[str, Any], *,
               source_model: nn.Module | None = None, batch_size: int = BATCH_SIZE,
               log: Callable[[str], None] | None = print) -> SanityResult:
    """Every check of ``spec`` (:func:`sanity_spec`) on ``model`` and images ``x`` in [0, 1] (on its device).

    ``source_model`` (same device, same inputs) is the transfer check's other-seed model; without it that
    check is *not run*. Every attack restarts its random draws from the spec's seed.
    """
    check_inputs(x)
    device, a = x.device, spec["attacks"]
    seconds: dict[str, float] = {}
    flags: dict[str, torch.Tensor] = {}

    def timed(name: str, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        synchronize(device)
        t0 = time.perf_counter()
        flags[name] = compute().cpu()
        synchronize(device)
        seconds[name] = time.perf_counter() - t0
        if log is not None:
            log(f"[part]   sanity {name}: {_pct(flags[name]):6.2f}% ({seconds[name]:.1f}s)")
        return flags[name]

    def gen() -> torch.Generator:
        return torch.Generator(device=device).manual_seed(spec["seed"])

    with eval_mode(model):
        natural = timed("natural", lambda: batched_correct(model, x, y, None, batch_size, None))
        pgd20 = timed("pgd20", lambda: batched_correct(model, x, y, build_attack(a["pgd20"]), batch_size, gen()))
        timed("pgd_strong", lambda: _restarts(model, x, y, a["pgd_strong"], pgd20, batch_size, gen()))
        timed("apgd_ce", lambda: batched_correct(model, x, y, _apgd(a["apgd_ce"]), batch_size, None))
        timed("apgd_dlr", lambda: batched_correct(model, x, y, _apgd(a["apgd_dlr"]), batch_size, None))
        whitebox = natural & pgd20 & flags["pgd_strong"] & flags["apgd_ce"] & flags["apgd_dlr"]
        flags["whitebox"] = whitebox
        square = Square(a["square"]["eps"], n_queries=a["square"]["n_queries"], seed=a["square"]["seed"],
                        p_init=a["square"]["p_init"])
        timed("square", lambda: batched_correct(model, x, y, square, batch_size, None))
        large = a["large_eps"]
        timed("large_eps", lambda: batched_correct(
            model, x, y, PGD(large["eps"], large["alpha"], large["steps"], loss="ce", start="uniform"), batch_size,
            gen()))
        if source_model is not None:
            timed("transfer", lambda: _transfer(source_model, model, x, y, a["transfer"], batch_size, gen()))
        zero_grad = zero_gradient_examples(model, x, y, batch_size)
    checks = {
        "convergence": _convergence(flags, a["pgd_strong"]),
        "black_box": _black_box(flags, zero_grad),
        "large_eps": _large_eps(flags, large),
        "transfer": _transfer_check(flags),
    }
    rows = list(flags)
    return SanityResult(rows, np.stack([flags[r].numpy() for r in rows]).astype(bool), checks, seconds, dict(spec))


def _apgd(spec: dict[str, Any]) -> APGD:
    return APGD(spec["eps"], n_iter=spec["n_iter"], loss=spec["loss"], restarts=spec["restarts"], seed=spec["seed"])


def _restarts(model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict[str, Any], start: torch.Tensor,
              batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Worst case of PGD-20's flags ``start`` and ``restarts`` runs of PGD-``steps``, each attacking only the
    examples still correct (the same flags as attacking all: an example broken once stays broken)."""
    attack = PGD(spec["eps"], spec["alpha"], spec["steps"], loss=spec["loss"], start=spec["start"])
    correct = start.to(x.device).clone()
    for _ in range(spec["restarts"]):
        alive = correct.nonzero().squeeze(1)
        if not len(alive):
            break
        correct[alive] = batched_correct(model, x[alive], y[alive], attack, batch_size, generator)
    return correct


def _transfer(source: nn.Module, target: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: dict[str, Any],
              batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Correctness of ``target`` on the PGD adversarial examples of ``source``."""
    attack = build_attack(spec)
    out = []
    with eval_mode(source):
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            adv = attack(source, xb, yb, generator=generator)
            with torch.no_grad():
                out.append(target(adv).argmax(1) == yb)
    return torch.cat(out)


def _check(status: str, measure: float | None, threshold: float, message: str, **numbers: Any) -> dict[str, Any]:
    return {"status": status, "measure": measure, "threshold": threshold, "message": message, **numbers}


def lower_bound(k: int, n: int, level: float = CONVERGENCE_LEVEL) -> float:
    """One-sided ``level`` Clopper–Pearson lower bound (%) of a proportion observed as k of n."""
    return 0.0 if k == 0 else 100.0 * float(beta.ppf(1 - level, k, n - k + 1))


def _convergence(flags: dict[str, torch.Tensor], spec: dict[str, Any]) -> dict[str, Any]:
    pgd20, strong = _pct(flags["pgd20"]), _pct(flags["pgd_strong"])
    k, n = int((flags["pgd20"] & ~flags["pgd_strong"]).sum()), len(flags["pgd20"])
    drop, low = pgd20 - strong, lower_bound(k, n)
    name = f"PGD-{spec['steps']}×{spec['restarts']}"
    ok = low <= CONVERGENCE_TOLERANCE + 1e-9
    message = (f"PGD-20 {pgd20:.2f}%, {name} {strong:.2f}%: the stronger attack takes off {drop:.2f} points "
               f"({k} of {n} examples; {100 * CONVERGENCE_LEVEL:g} % lower bound {low:.2f}) "
               + (f"(not shown above {CONVERGENCE_TOLERANCE:g})" if ok else
                  f"(> {CONVERGENCE_TOLERANCE:g}): PGD-20 has not converged on this model; trust the stronger attacks"))
    return _check(PASS if ok else WARN, low, CONVERGENCE_TOLERANCE, message, drop=drop, drop_examples=k,
                  pgd20_accuracy=pgd20, strong_accuracy=strong, strong_attack=name)


def _black_box(flags: dict[str, torch.Tensor], zero_gradients: int) -> dict[str, Any]:
    white, square = flags["whitebox"], flags["square"]
    only = white & ~square
    share = _pct(only)
    ok = share <= SQUARE_TOLERANCE + 1e-9
    message = (f"white-box worst case {_pct(white):.2f}%, Square {_pct(square):.2f}%; Square breaks {int(only.sum())} "
               f"example(s) every white-box attack left correct ({share:.2f}% "
               + (f"≤ {SQUARE_TOLERANCE:g}%)" if ok else
                  f"> {SQUARE_TOLERANCE:g}%): the gradient attacks are failing here (gradient masking?)"))
    if zero_gradients:
        message += f"; {zero_gradients} example(s) have an all-zero input gradient"
    return _check(PASS if ok else WARN, share, SQUARE_TOLERANCE, message, whitebox_accuracy=_pct(white),
                  square_accuracy=_pct(square), square_only=int(only.sum()), zero_gradient_examples=zero_gradients)


def _large_eps(flags: dict[str, torch.Tensor], spec: dict[str, Any]) -> dict[str, Any]:
    acc = _pct(flags["large_eps"])
    ok = acc <= LARGE_EPS_MAX_ACCURACY + 1e-9
    message = (f"PGD at ε = {spec['eps_255']:g}/255 leaves {acc:.2f}% ({int(flags['large_eps'].sum())} examples) "
               "correct "
               + (f"(≤ {LARGE_EPS_MAX_ACCURACY:g}%)" if ok else
                  f"(> {LARGE_EPS_MAX_ACCURACY:g}%): an attack that cannot break the model with an unbounded budget "
                  "is not finding its adversarial examples (gradient masking?)"))
    return _check(PASS if ok else WARN, acc, LARGE_EPS_MAX_ACCURACY, message, large_eps_255=spec["eps_255"],
                  large_eps_accuracy=acc)


def _transfer_check(flags: dict[str, torch.Tensor]) -> dict[str, Any]:
    if "transfer" not in flags:
        return _check(NOT_RUN, None, TRANSFER_TOLERANCE, "no source model (transfer_from) given")  # JSON null
    white, transfer = _pct(flags["whitebox"]), _pct(flags["transfer"])
    gap = white - transfer
    ok = gap <= TRANSFER_TOLERANCE + 1e-9
    only = int((flags["whitebox"] & ~flags["transfer"]).sum())
    message = (f"transfer from the source model {transfer:.2f}%, white-box worst case {white:.2f}% "
               + ("(transfer is weaker" if gap <= 0 else f"(transfer {gap:.2f} points stronger")
               + (")" if ok else f", > {TRANSFER_TOLERANCE:g}): the white-box attacks are failing on this model "
                  "(gradient masking?)") + f"; {only} example(s) fall to transfer only")
    return _check(PASS if ok else WARN, gap, TRANSFER_TOLERANCE, message, transfer_accuracy=transfer,
                  whitebox_accuracy=white, transfer_only=only)


def entry_fields(result: SanityResult) -> dict[str, Any]:
    """What ``eval/sanity.json`` holds beyond the fields every evaluation result has (``part.evaluation.evaluate``)."""
    return {"status": result.status, "checks": result.checks, "accuracy": result.accuracy(), "rows": result.rows,
            "seconds_by_attack": result.seconds, "seconds": float(sum(result.seconds.values()))}
