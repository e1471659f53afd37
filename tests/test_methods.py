"""The outer losses against the papers' formulas, written out by hand on a fixed linear model and four images:
natural training's cross-entropy on x, AT's on x', TRADES (Zhang et al. 2019) CE(f(x), y) + β·KL(f(x) ‖ f(x')), MART (Wang et al. 2020)
boosted CE on x' + β·KL(p(x) ‖ p(x'))·(1 − p_y(x)), each averaged over the batch as the reference code does, and
the PART variants, which must be the same functions applied to AEs inside a per-pixel budget.

The oracles use only elementwise tensor arithmetic (exp, log, sums, a masked max), never ``torch.nn.functional``,
so an error in how ``part.training.methods`` calls a library function — a KL's arguments in the wrong order, a mean for a
sum — shows as a difference. Each is compared value for value and gradient for gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from part.base import config
from part.training.methods import outer_loss

BETA = 6.0
Y = torch.tensor([0, 1, 2, 1])


def _model() -> nn.Module:
    """A fixed linear classifier over 3×2×2 images, three classes, in float64."""
    g = torch.Generator().manual_seed(3)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(3, 12, generator=g, dtype=torch.float64))
        net[1].bias.copy_(torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64))
    return net


def _batch(pixel_budget: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Four images and their AEs: a scalar budget of 0.3, or (PART) a per-pixel budget in [0.05, 0.5]."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(4, 3, 2, 2, generator=g, dtype=torch.float64)
    budget = 0.05 + 0.45 * torch.rand(1, 1, 2, 2, generator=g, dtype=torch.float64) if pixel_budget else 0.3
    sign = torch.randint(0, 2, x.shape, generator=g).double() * 2 - 1
    return x, (x + sign * budget).clamp(0, 1)


def _probs(z: torch.Tensor) -> torch.Tensor:
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def _per_example_kl(p: torch.Tensor, q: torch.Tensor, guard: float = 0.0) -> torch.Tensor:
    """KL(p ‖ q) = Σ_k p_k (log p_k − log q_k) of each row (``guard`` inside the second log, as MART's code)."""
    return (p * (torch.log(p) - torch.log(q + guard))).sum(dim=1)


def _true(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return p[torch.arange(len(y)), y]


def natural_oracle(z: torch.Tensor, z_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (-torch.log(_true(_probs(z), y))).mean()


def at_oracle(z: torch.Tensor, z_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (-torch.log(_true(_probs(z_adv), y))).mean()


def trades_oracle(z: torch.Tensor, z_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p, q = _probs(z), _probs(z_adv)
    return (-torch.log(_true(p, y))).mean() + BETA * _per_example_kl(p, q).mean()


def mart_oracle(z: torch.Tensor, z_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """−log q_y − log(1 − max_{k≠y} q_k) + β·KL(p ‖ q)·(1 − p_y), with the reference code's guards
    (1.0001 and 1e-12 in the logs, 1.0000001 in the weight)."""
    p, q = _probs(z), _probs(z_adv)
    others = q.masked_fill(nn.functional.one_hot(y, q.shape[1]).bool(), float("-inf"))
    boosted = -torch.log(_true(q, y)) - torch.log(1.0001 - others.max(dim=1).values + 1e-12)
    weighted = _per_example_kl(p, q, guard=1e-12) * (1.0000001 - _true(p, y))
    return boosted.mean() + BETA * weighted.mean()


ORACLES = {"natural": natural_oracle, "at": at_oracle, "trades": trades_oracle, "mart": mart_oracle}


def _loss_and_grads(loss_fn, x, x_adv) -> tuple[torch.Tensor, list[torch.Tensor]]:
    net = _model()
    loss = loss_fn(net, x, x_adv)
    loss.backward()
    return loss.detach(), [p.grad for p in net.parameters()]


@pytest.mark.parametrize("method", ["natural", "at", "trades", "mart", "part", "part_trades", "part_mart"])
def test_each_loss_and_its_gradients_equal_the_formula(method):
    cfg = config.from_dict({"dataset": "digits", "method": method})
    x, x_adv = _batch(pixel_budget=cfg.pixel_reweighted)
    oracle = ORACLES[cfg.base_method]
    ours, our_grads = _loss_and_grads(lambda net, a, b: outer_loss(cfg)(net, a, b, Y, BETA)[0], x, x_adv)
    expected, oracle_grads = _loss_and_grads(lambda net, a, b: oracle(net(a), net(b), Y), x, x_adv)
    # the losses cast logits to float32: agreement to float32's precision, far below any formula's error
    torch.testing.assert_close(ours.double(), expected, rtol=1e-6, atol=1e-6)
    for mine, theirs in zip(our_grads, oracle_grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_the_batch_exercises_every_branch_of_the_formulas():
    """The fixed batch is one on which a wrong formula shows: the KL's two directions differ, MART's runner-up
    is the top class for some AEs and the second for others, and its weights 1 − p_y(x) differ."""
    net = _model()
    x, x_adv = _batch(pixel_budget=False)
    with torch.no_grad():
        p, q = _probs(net(x)), _probs(net(x_adv))
    forward, backward = _per_example_kl(p, q), _per_example_kl(q, p)
    assert ((forward - backward).abs() > 1e-3).all()
    top_is_true = q.argmax(dim=1) == Y
    assert top_is_true.any() and not top_is_true.all()
    assert _true(p, Y).std() > 0.05


def test_the_returned_logits_are_those_of_the_adversarial_examples():
    x, x_adv = _batch(pixel_budget=False)
    net = _model()
    for method in ("at", "trades", "mart"):  # natural training returns f(x)'s
        _, logits = outer_loss(config.from_dict({"dataset": "digits", "method": method}))(net, x, x_adv, Y, BETA)
        torch.testing.assert_close(logits, net(x_adv).float().detach(), rtol=0, atol=0, check_dtype=True)
