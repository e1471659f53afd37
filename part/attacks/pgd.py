"""ℓ∞ attacks with one interface: ``attack(model, x, y, eps=None, generator=None) -> x_adv``.

Every budget may be a scalar or a tensor broadcastable to ``x`` (one ε per image, channel or
pixel): PART's Pixel-AG is PGD with the projection ``|δ| ≤ ε_map`` taken element-wise, followed by
``x + δ ∈ [0, 1]``, so the uniform-budget attacks are the special case of a constant map.

Conventions shared by all attacks (as in torchattacks):
* the model is switched to eval mode for the attack and its previous mode restored afterwards,
  so batch-norm statistics are neither used from the batch nor updated by the attack;
* gradients are taken with ``torch.autograd.grad`` with respect to the input only, so no
  parameter ``.grad`` is touched and the caller's optimiser state is unaffected;
* random starts draw from the ``generator`` passed in, so a training epoch can replay exactly; a
  :class:`RowsOf` generator makes them the rows of draws for a larger batch (multi-process training).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from part.base.runtime import eval_mode

Budget = float | torch.Tensor


@dataclass(frozen=True)
class RowsOf:
    """Draw random starts for a whole batch of ``total`` images from ``generator`` and keep rows ``rows``.

    A process of a multi-process run attacks only its rows of each global batch (see
    :mod:`part.training.distributed`); drawing for the whole batch gives its images exactly the starts one process
    would draw for them, so the run does not depend on the number of processes.
    """
    generator: torch.Generator
    rows: slice
    total: int


RandomSource = torch.Generator | RowsOf | None


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: Budget) -> torch.Tensor:
    """Element-wise projection onto ``|x_adv - x| ≤ eps`` followed by the image box ``[0, 1]``."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp_(0.0, 1.0)


def _noise(kind: str, x: torch.Tensor, g: RandomSource) -> torch.Tensor:
    shape, rows = x.shape, slice(None)
    if isinstance(g, RowsOf):
        shape, rows, g = (g.total, *x.shape[1:]), g.rows, g.generator
    if kind == "uniform":
        return torch.rand(shape, device=x.device, dtype=x.dtype, generator=g).mul_(2).sub_(1)[rows]
    if kind == "normal":
        return torch.randn(shape, device=x.device, dtype=x.dtype, generator=g)[rows]
    raise ValueError(f"unknown random start {kind!r}; expected 'uniform', 'normal' or 'none'")


def random_start(x: torch.Tensor, eps: Budget, start: str, g: RandomSource) -> torch.Tensor:
    """AT's uniform draw in the (per-entry) ε-ball, or TRADES/MART's ``x + 0.001·N(0, 1)``.

    ``"uniform_unclipped"`` is the start of the release's Pixel-AG: the same draw, left outside the
    image box (the caller passes the scalar ε there, so it leaves the ε-map's ball too); the first
    projection after the first gradient step enforces both.
    """
    if start == "none":
        return x.clone()
    if start == "uniform":
        return (x + _noise("uniform", x, g) * eps).clamp_(0.0, 1.0)
    if start == "uniform_unclipped":
        return x + _noise("uniform", x, g) * eps
    return x + 0.001 * _noise(start, x, g)


class Attack:
    """Base class: mode handling and the call signature; subclasses implement ``perturb``.

    Args:
        eps: default budget, scalar or tensor broadcastable to the input batch.
    Call:
        ``attack(model, x, y, eps=None, generator=None)`` with x in [0, 1] of shape (B, C, H, W)
        and integer labels y (B,); returns detached adversarial examples of x's shape and dtype.
    """

    def __init__(self, eps: Budget):
        self.eps = eps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Budget | None = None,
                 generator: RandomSource = None) -> torch.Tensor:
        with eval_mode(model), torch.enable_grad():
            return self.perturb(model, x.detach(), y, self.eps if eps is None else eps, generator).detach()

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: Budget,
                g: RandomSource) -> torch.Tensor:
        raise NotImplementedError

    def settings(self, model: nn.Module) -> dict:
        """What the attack holds beyond the spec it was built from, read back for the results (a packaged
        attack's preset); nothing for the attacks written here, whose spec is all there is."""
        return {}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v}" for k, v in vars(self).items() if not isinstance(v, torch.Tensor))
        return f"{type(self).__name__}({fields})"


def _sign_ascent(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, eps: Budget, alpha: float,
                 steps: int, objective: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``steps`` projected sign-gradient steps maximising ``objective(logits)`` (summed over the batch)."""
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = objective(model(x_adv).float())
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = project(x_adv.detach() + alpha * grad.sign(), x, eps)
    return project(x_adv.detach(), x, eps)


class PGD(Attack):
    """Projected gradient ascent on CE (AT, MART, PGD-20) or on KL to the natural output (TRADES).

    Args:
        eps: budget (scalar or per-entry map), alpha: step size, steps: number of steps,
        loss: ``"ce"`` — cross-entropy to the label; ``"kl"`` — KL(f(x) ‖ f(x')) as TRADES maximises,
        start: ``"uniform"`` in the ε-ball (Madry et al.), ``"normal"`` (x + 0.001·N(0,1), TRADES/MART)
        or ``"none"``,
        map_start: how a uniform start treats a per-entry budget (Pixel-AG): ``"per_pixel"`` draws in
        the ε-map's ball, clipped to [0, 1]; ``"scalar_unclipped"`` is the release's x + U(−ε, ε) with
        the attack's default (scalar) ε, unclipped. A scalar budget always gets the clipped start,
        fp32: run with autocast off, whatever precision the caller chose (see ``part.training.methods.INNER``).
    """

    def __init__(self, eps: Budget, alpha: float, steps: int, loss: str = "ce", start: str = "uniform",
                 map_start: str = "per_pixel", fp32: bool = False):
        super().__init__(eps)
        if loss not in ("ce", "kl"):
            raise ValueError(f"PGD loss {loss!r}: expected 'ce' or 'kl'")
        if start not in ("uniform", "normal", "none"):
            raise ValueError(f"PGD start {start!r}: expected 'uniform', 'normal' or 'none'")
        if map_start not in ("per_pixel", "scalar_unclipped"):
            raise ValueError(f"PGD map_start {map_start!r}: expected 'per_pixel' or 'scalar_unclipped'")
        self.alpha, self.steps, self.loss, self.start, self.map_start = alpha, steps, loss, start, map_start
        self.fp32 = fp32

    def perturb(self, model, x, y, eps, g):
        with torch.autocast(x.device.type, enabled=False) if self.fp32 else contextlib.nullcontext():
            return self._perturb(model, x, y, eps, g)

    def _perturb(self, model, x, y, eps, g):
        if self.loss == "ce":
            def objective(logits):
                return F.cross_entropy(logits, y, reduction="sum")
        else:
            with torch.no_grad():
                p_nat = F.softmax(model(x).float(), dim=1)

            def objective(logits):
                return F.kl_div(F.log_softmax(logits, dim=1), p_nat, reduction="sum")
        if self.start == "uniform" and torch.is_tensor(eps) and self.map_start == "scalar_unclipped":
            x_adv = random_start(x, self.eps, "uniform_unclipped", g)
        else:
            x_adv = random_start(x, eps, self.start, g)
        return _sign_ascent(model, x, x_adv, eps, self.alpha, self.steps, objective)


class MMA(Attack):
    """Minimum-margin attack (Gao et al., ICML 2022) in the variant of PART's release.

    One uniform random start; the ``k`` highest-scoring wrong classes of the natural logits are each
    attacked for ``steps`` sign steps on the targeted margin loss ``-max(z_y - z_t + confidence, 0)``;
    per example the candidate with the largest final margin ``z_t - z_y`` is kept. The k targets
    run as one batch of B·k images.

    ``map_start`` is how the start treats a per-entry budget (MMA as PART's AE generator):
    ``"per_pixel"`` draws in the ε-map's ball; ``"scalar"`` is the release's x + U(−ε, ε) with the
    attack's default (scalar) ε. Both are clipped to [0, 1], as the release's MMA clips its start
    (unlike its Pixel-AG PGD, :class:`PGD`'s ``"scalar_unclipped"``); the ε-map is enforced from the
    first projection on. A scalar budget gets the same start either way.
    """

    def __init__(self, eps: Budget, alpha: float, steps: int = 20, k: int = 3, confidence: float = 50.0,
                 map_start: str = "per_pixel"):
        super().__init__(eps)
        if map_start not in ("per_pixel", "scalar"):
            raise ValueError(f"MMA map_start {map_start!r}: expected 'per_pixel' or 'scalar'")
        self.alpha, self.steps, self.k, self.confidence, self.map_start = alpha, steps, k, confidence, map_start

    def perturb(self, model, x, y, eps, g):
        b, k = x.shape[0], self.k
        with torch.no_grad():
            logits = model(x).float()
        targets = logits.scatter(1, y[:, None], float("-inf")).topk(k, dim=1).indices  # (B, k)
        rep = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731 — one row per (image, target)
        eps_k = rep(eps.expand_as(x)) if torch.is_tensor(eps) else eps
        x_k, y_k, t_k = rep(x), rep(y), targets.reshape(-1)
        start_eps = self.eps if torch.is_tensor(eps) and self.map_start == "scalar" else eps
        x_adv = rep(random_start(x, start_eps, "uniform", g))

        def margin(z):
            return z.gather(1, t_k[:, None]).squeeze(1) - z.gather(1, y_k[:, None]).squeeze(1)

        def objective(z):
            return -(self.confidence - margin(z)).clamp(min=0).sum()

        x_adv = _sign_ascent(model, x_k, x_adv, eps_k, self.alpha, self.steps, objective)
        with torch.no_grad():
            best = margin(model(x_adv).float()).view(b, k).argmax(1)
        return x_adv.view(b, k, *x.shape[1:])[torch.arange(b, device=x.device), best]
