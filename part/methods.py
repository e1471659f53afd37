"""The training objectives: each method is an inner attack plus one outer loss function.

The loss functions follow the reference code of each method (Madry et al. for AT, Zhang et al.
2019 for TRADES, Wang et al. 2020 for MART), so they can be dropped into any training loop:
``loss, logits = trades_loss(model, x, x_adv, y, beta)``. PART changes none of them — only the
budget the inner attack is projected onto — which is why ``part``, ``part_trades`` and
``part_mart`` reuse their base method's attack and loss unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from part.attacks import MMA, PGD, Attack
from part.config import AttackConfig


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
                beta: float = 6.0) -> tuple[torch.Tensor, torch.Tensor]:
    """TRADES: CE(f(x), y) + β · KL(f(x') ‖ f(x)), the KL summed over classes, averaged over the batch."""
    logits = model(x).float()
    logits_adv = model(x_adv).float()
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
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


def training_attack(base: str, cfg: AttackConfig) -> Attack | None:
    """The attack that generates a base method's training AEs (None for natural training)."""
    if base == "natural":
        return None
    if cfg.generator == "mma":
        return MMA(cfg.eps, cfg.alpha, steps=cfg.steps)
    return PGD(cfg.eps, cfg.alpha, cfg.steps, **INNER[base])
