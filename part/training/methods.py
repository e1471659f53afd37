"""The training objectives: each method is an inner attack plus one outer loss function.

The loss functions follow the reference code of each method (Madry et al. for AT, Zhang et al.
2019 for TRADES, Wang et al. 2020 for MART), so they can be dropped into any training loop:
``loss, logits = trades_loss(model, x, x_adv, y, beta)``. PART changes none of them — only the
budget the inner attack is projected onto — which is why ``part``, ``part_trades`` and
``part_mart`` reuse their base method's attack and loss unchanged.
"""

from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from part.attacks.pgd import MMA, PGD, Attack
from part.base.config import AttackConfig, RunConfig

OuterLoss = Callable[..., tuple[torch.Tensor, torch.Tensor]]
"""``loss, logits = outer(model, x, x_adv, y, beta)``: the objective a training step descends."""


def natural_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor,
                 beta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    logits = model(x).float()
    return F.cross_entropy(logits, y), logits


def at_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
            beta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Madry et al.: cross-entropy on the adversarial examples only."""
    logits_adv = model(x_adv).float()
    return F.cross_entropy(logits_adv, y), logits_adv


def trades_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
                beta: float = 6.0, forwards: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """TRADES: CE(f(x), y) + β · KL(f(x) ‖ f(x')) (natural ‖ adversarial, as the reference code's
    ``KLDivLoss(log f(x'), f(x))``), the KL summed over classes, averaged over the batch.

    ``forwards=3`` is the reference code: f(x) for the CE term, then f(x') and f(x) again for the KL
    term. In train mode the second f(x) repeats the first's output (same batch statistics), so loss
    and gradients equal the two-forward form, but batch norm's running statistics — which every
    eval-mode attack, CAM refresh and evaluation uses — move three times per batch, x counted twice.
    """
    if forwards not in (2, 3):
        raise ValueError(f"TRADES forwards {forwards!r}: expected 2 or 3")
    logits = model(x).float()
    logits_adv = model(x_adv).float()
    target = model(x).float() if forwards == 3 else logits
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(target, dim=1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * robust, logits_adv


def mart_loss(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor,
              beta: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """MART: boosted CE on x' plus β · KL(f(x) ‖ f(x')) weighted by 1 − p_y(x) (misclassification-aware)."""
    logits = model(x).float()
    logits_adv = model(x_adv).float()
    p_adv = F.softmax(logits_adv, dim=1)
    top2 = p_adv.argsort(dim=1)[:, -2:]
    runner_up = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
    boosted_ce = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), runner_up)
    p_nat = F.softmax(logits, dim=1)
    p_true = p_nat.gather(1, y[:, None]).squeeze(1)
    kl = F.kl_div(torch.log(p_adv + 1e-12), p_nat, reduction="none").sum(1)
    return boosted_ce + beta * (kl * (1.0000001 - p_true)).mean(), logits_adv


OUTER_LOSSES = {"natural": natural_loss, "at": at_loss, "trades": trades_loss, "mart": mart_loss}

INNER = {"at": {"loss": "ce", "start": "uniform"},
         "trades": {"loss": "kl", "start": "normal"},
         "mart": {"loss": "ce", "start": "normal"}}
"""Each base method's inner maximisation: its loss and its random start."""

MMA_START = {"per_pixel": "per_pixel", "scalar_unclipped": "scalar"}
"""``attack.pixel_start`` for MMA as the generator: the release starts its MMA at x + U(−ε, ε) with the
scalar ε like its Pixel-AG, but clipped to [0, 1] (:class:`part.attacks.pgd.MMA`)."""


def outer_loss(cfg: RunConfig) -> OuterLoss:
    """The outer loss of a run's base method, with the run's TRADES forwards."""
    if cfg.base_method == "trades":
        return functools.partial(trades_loss, forwards=cfg.trades_forwards)
    return OUTER_LOSSES[cfg.base_method]


def training_attack(base: str, cfg: AttackConfig) -> Attack | None:
    """The attack that generates a base method's training AEs (None for natural training)."""
    if base == "natural":
        return None
    if cfg.generator == "mma":
        return MMA(cfg.eps, cfg.alpha, steps=cfg.steps, map_start=MMA_START[cfg.pixel_start])
    return PGD(cfg.eps, cfg.alpha, cfg.steps, **INNER[base], map_start=cfg.pixel_start)
