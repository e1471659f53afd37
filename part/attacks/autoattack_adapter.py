"""The attacks that come from packaged AutoAttack code. From fra31's (``pyautoattack``, pinned in
pyproject): standard AutoAttack, Gao et al.'s MM3, which is targeted APGD on a margin loss, and APGD and
Square alone (the white-box and black-box halves of ``part.evaluation.sanity``'s gradient-masking check). From
torchattacks (pinned in constraints.txt): the AutoAttack the authors' release evaluated with, whose APGD,
APGD-T and FAB-T run 10 iterations instead of standard AutoAttack's 100 — the protocol of the paper's AA
column, so the paper's numbers can be compared under their own protocol.

Everything that touches either package lives here, so a new release of one is checked in one place
(``tests/test_evaluate.py`` asserts the presets that ``settings`` reads back). Two habits of
that code are contained here rather than left to callers:

* every sub-attack of both packages calls ``torch.manual_seed`` (CPU and CUDA) with its own seed — the global RNG
  state is saved and restored around each call, so evaluating never changes what a caller draws next;
* its fra31 sanity checks (randomised or dynamic defence, probability outputs, too many target
  classes, Square beating the gradient attacks, zero gradients) go to the ``auto-attack`` logger,
  where nobody sees them; they are re-raised as ``EvaluationWarning``, and the running robust
  accuracy after each sub-attack is passed to the caller's log.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Any, Callable, Iterator

import torch
from torch import nn

from part.attacks.pgd import Attack

_AA_LOGGER = "auto-attack"


class EvaluationWarning(UserWarning):
    """A robustness number that is probably wrong: the model, its outputs or an attack look broken."""


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


@contextlib.contextmanager
def _aa_reporting(log: Callable[[str], None] | None) -> Iterator[None]:
    """Route the ``auto-attack`` logger for the duration of one run: warnings out, progress to ``log``."""

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            msg = record.getMessage()
            if record.levelno >= logging.WARNING:
                warnings.warn(f"AutoAttack: {msg}", EvaluationWarning, stacklevel=2)
            elif log is not None and msg.startswith(("initial accuracy", "robust accuracy after")):
                log(f"[part]   aa {msg}")

    logger = logging.getLogger(_AA_LOGGER)
    handler = Forward(logging.DEBUG)
    saved = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@contextlib.contextmanager
def _isolated(log: Callable[[str], None] | None = None) -> Iterator[None]:
    with torch.random.fork_rng(devices=_cuda_devices()), _aa_reporting(log), torch.no_grad():
        yield


class StandardAutoAttack:
    """Standard AutoAttack, ℓ∞ (or ℓ2): APGD-CE, APGD-T, FAB-T, Square with fra31's standard settings.

    Args:
        model: classifier returning logits, already on ``device`` and in eval mode.
        eps: the budget; seed: the one seed every sub-attack restarts from;
        device: where the attack runs (passed explicitly: pyautoattack's default is the CPU);
        batch_size: images per forward pass; log: receives the running robust accuracy.
    Call:
        ``perturb(x, y) -> x_adv`` on whole tensors; AutoAttack batches them itself and only
        attacks points that are still robust, so one call per evaluation is the efficient use.
    """

    def __init__(self, model: nn.Module, eps: float, *, device: torch.device | str, seed: int = 0,
                 batch_size: int, norm: str = "Linf", log: Callable[[str], None] | None = None):
        from pyautoattack import AutoAttack

        with _aa_reporting(None):  # _set_version logs at INFO; keep it off the root logger
            self.aa = AutoAttack(model, eps=eps, norm=norm, version="standard", device=torch.device(device), seed=seed)
        self.batch_size = batch_size
        self.log = log

    @property
    def settings(self) -> dict[str, Any]:
        """The preset as the constructed object holds it (read back, not restated), for metrics.json."""
        import pyautoattack

        aa = self.aa
        return {
            "package": "pyautoattack", "package_version": pyautoattack.__version__, "version": aa.version,
            "norm": aa.norm, "eps": float(aa.epsilon), "seed": aa.seed, "batch_size": self.batch_size,
            "attacks": list(aa.attacks_to_run),
            "apgd-ce": {"n_iter": aa.apgd.n_iter, "n_restarts": aa.apgd.n_restarts, "rho": aa.apgd.thr_decr,
                        "eot_iter": aa.apgd.eot_iter},
            "apgd-t": {"n_iter": aa.apgd_targeted.n_iter, "n_restarts": aa.apgd_targeted.n_restarts,
                       "n_target_classes": aa.apgd_targeted.n_target_classes, "rho": aa.apgd_targeted.thr_decr,
                       "loss": aa.apgd_targeted.loss},
            "fab-t": {"n_iter": aa.fab.n_iter, "n_restarts": aa.fab.n_restarts,
                      "n_target_classes": aa.fab.n_target_classes},
            "square": {"n_queries": aa.square.n_queries, "n_restarts": aa.square.n_restarts,
                       "p_init": aa.square.p_init},
        }

    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with _isolated(self.log):
            x_adv, _ = self.aa.run_standard_evaluation(x, y, batch_size=self.batch_size)
        return x_adv


def _margin_apgd_class():
    """Targeted APGD whose per-example objective is Gao et al.'s margin ``-max(z_y - z_t + κ, 0)``.

    APGD-T picks its loss by name and ships only the targeted DLR loss; overriding that one method
    swaps in the margin while keeping APGD's step-size schedule, momentum, best-point bookkeeping
    and target choice (the 2nd, 3rd, ... highest natural logits) untouched.
    """
    from pyautoattack.autopgd_base import APGDAttack_targeted

    class MarginAPGDTargeted(APGDAttack_targeted):
        confidence = 50.0

        def dlr_loss_targeted(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            z_y = logits.gather(1, y[:, None]).squeeze(1)
            z_t = logits.gather(1, self.y_target[:, None]).squeeze(1)
            return -(z_y - z_t + self.confidence).clamp(min=0)

    return MarginAPGDTargeted


class MM3(Attack):
    """Minimum-margin attack as Gao et al. (ICML 2022) publish it: MM3 = targeted APGD on the margin
    loss (confidence κ = 50) against each of the ``k`` = 3 highest wrong natural logits in turn, with
    every target attacking only the points the previous ones left robust.

    The release's MMA (``part.attacks.pgd.MMA``) uses fixed sign steps and keeps the candidate with the
    largest final margin instead; both are offered so their gap can be measured. ``steps`` per target
    defaults to 20, the release's MMA budget. Only scalar ε (APGD has no per-pixel budget); the
    ``generator`` is unused — APGD draws its start from ``seed``, inside an isolated RNG state.
    """

    def __init__(self, eps: float, steps: int = 20, k: int = 3, confidence: float = 50.0, seed: int = 0):
        super().__init__(eps)
        self.steps, self.k, self.confidence, self.seed = steps, k, confidence, seed

    def perturb(self, model, x, y, eps, g):
        if torch.is_tensor(eps):
            raise ValueError("MM3 runs APGD, which takes a scalar ε only")
        apgd = _margin_apgd_class()(model, n_iter=self.steps, norm="Linf", n_restarts=1, eps=float(eps),
                                    seed=self.seed, rho=0.75, n_target_classes=self.k, device=x.device,
                                    logger=logging.getLogger(_AA_LOGGER))
        apgd.confidence = self.confidence
        with _isolated():
            return apgd.perturb(x, y).to(x.dtype)


class APGD(Attack):
    """Untargeted APGD (Croce & Hein, ICML 2020) from the packaged AutoAttack code, on the cross-entropy
    (``loss="ce"``, AutoAttack's APGD-CE) or the DLR loss (``"dlr"``); ℓ∞, scalar ε. The ``generator`` is
    unused: APGD draws its starts from ``seed``, inside an isolated RNG state. ``n_iter`` = 100 and ρ = 0.75
    are AutoAttack's standard values."""

    def __init__(self, eps: float, n_iter: int = 100, loss: str = "ce", restarts: int = 1, seed: int = 0):
        super().__init__(eps)
        if loss not in ("ce", "dlr"):
            raise ValueError(f"APGD loss {loss!r}: expected 'ce' or 'dlr'")
        self.n_iter, self.loss, self.restarts, self.seed = n_iter, loss, restarts, seed

    def perturb(self, model, x, y, eps, g):
        from pyautoattack.autopgd_base import APGDAttack

        if torch.is_tensor(eps):
            raise ValueError("APGD takes a scalar ε only")
        apgd = APGDAttack(model, n_iter=self.n_iter, norm="Linf", n_restarts=self.restarts, eps=float(eps),
                          seed=self.seed, loss=self.loss, eot_iter=1, rho=0.75, device=x.device,
                          logger=logging.getLogger(_AA_LOGGER))
        with _isolated():
            return apgd.perturb(x, y).to(x.dtype)


class Square(Attack):
    """The Square Attack (Andriushchenko et al., ECCV 2020) from the packaged AutoAttack code: score-based,
    gradient-free, on the margin loss, with AutoAttack's standard settings (p_init = 0.8, one restart, no
    rescaled schedule) and ``n_queries`` per example (5000 in standard AutoAttack). ℓ∞, scalar ε; the
    ``generator`` is unused (Square draws from ``seed``, inside an isolated RNG state)."""

    def __init__(self, eps: float, n_queries: int = 5000, seed: int = 0, p_init: float = 0.8):
        super().__init__(eps)
        self.n_queries, self.seed, self.p_init = n_queries, seed, p_init

    def perturb(self, model, x, y, eps, g):
        from pyautoattack.square import SquareAttack

        if torch.is_tensor(eps):
            raise ValueError("Square takes a scalar ε only")
        square = SquareAttack(model, p_init=self.p_init, n_queries=self.n_queries, eps=float(eps), norm="Linf",
                              n_restarts=1, seed=self.seed, verbose=False, device=x.device, resc_schedule=False)
        with _isolated():
            return square.perturb(x, y).to(x.dtype)


RELEASE_AA_CLASSES = 10
"""``n_classes`` of the release's call, which leaves torchattacks' default: APGD-T and FAB-T attack the 9
highest wrong classes (as standard AutoAttack does) whatever the dataset's number of classes."""


class ReleaseAutoAttack(Attack):
    """AutoAttack as the PART release evaluates with it: torchattacks'
    ``AutoAttack(model, norm='Linf', eps=ε, version='standard')`` — APGD-CE, APGD-T and FAB-T with 10
    iterations each (torchattacks' defaults), Square with 5000 queries, each attacking the points the
    previous ones left robust, on every batch it is called with (as the release calls it per test batch).

    One departure, for reproducibility: the release leaves ``seed`` unset, so torchattacks seeds every
    sub-attack from the clock; here it is ``seed``. The ``generator`` is unused (isolated RNG state, as for
    the pyautoattack attacks). ℓ∞, scalar ε only.
    """

    def __init__(self, eps: float, seed: int = 0, n_classes: int = RELEASE_AA_CLASSES):
        super().__init__(eps)
        self.seed, self.n_classes = seed, n_classes

    def build(self, model: nn.Module, eps: float):
        """The torchattacks object of the release's call, for ``model``."""
        try:
            import torchattacks
        except ImportError as e:
            raise ImportError("the attack aa_release needs torchattacks 3.5.1: pip install --no-deps -c "
                              "constraints.txt torchattacks (its pin of requests 2.25 is never imported; "
                              "`make setup` does this)") from e
        return torchattacks.AutoAttack(model, norm="Linf", eps=float(eps), version="standard",
                                       n_classes=self.n_classes, seed=self.seed)

    def settings(self, model: nn.Module) -> dict[str, Any]:
        """The preset as the constructed object holds it (read back, not restated), for metrics.json."""
        import torchattacks

        aa = self.build(model, self.eps)
        apgd, apgdt, fab, square = aa._autoattack.attacks
        return {
            "package": "torchattacks", "package_version": torchattacks.__version__, "version": aa.version,
            "norm": aa.norm, "eps": float(aa.eps), "seed": aa.seed, "n_classes": aa.n_classes,
            "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"],
            "apgd-ce": {"n_iter": apgd.steps, "n_restarts": apgd.n_restarts, "loss": apgd.loss, "rho": apgd.thr_decr,
                        "eot_iter": apgd.eot_iter},
            "apgd-t": {"n_iter": apgdt.steps, "n_restarts": apgdt.n_restarts,
                       "n_target_classes": apgdt.n_target_classes, "rho": apgdt.thr_decr},
            "fab-t": {"n_iter": fab.steps, "n_restarts": fab.n_restarts, "multi_targeted": fab.multi_targeted,
                      "n_target_classes": fab.n_target_classes},
            "square": {"n_queries": square.n_queries, "n_restarts": square.n_restarts, "p_init": square.p_init},
        }

    def perturb(self, model, x, y, eps, g):
        if torch.is_tensor(eps):
            raise ValueError("the release's AutoAttack takes a scalar ε only")
        aa = self.build(model, eps)
        with _isolated():
            return aa(x, y).to(x.dtype)
