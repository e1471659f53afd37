import pytest
import torch
import torch.nn.functional as F
from torch import nn

from part.attacks.pgd import MMA, PGD, project, random_start

ATTACKS = [
    lambda eps: PGD(eps, alpha=2 / 255, steps=5, loss="ce", start="uniform"),
    lambda eps: PGD(eps, alpha=2 / 255, steps=5, loss="kl", start="normal"),
    lambda eps: PGD(eps, alpha=2 / 255, steps=5, loss="ce", start="normal"),
    lambda eps: MMA(eps, alpha=2 / 255, steps=5, k=3),
]


def batch(n=16, c=1, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, size, size, generator=g)
    x[0] = 0.0  # images touching the box edges exercise the [0, 1] clamp
    x[1] = 1.0
    return x, torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("make", ATTACKS)
def test_pixel_ag_invariants_with_a_per_pixel_budget(make, tiny_net):
    x, y = batch()
    g = torch.Generator().manual_seed(1)
    eps_map = torch.where(torch.rand(16, 1, 8, 8, generator=g) > 0.7, 8 / 255, 3 / 255)
    x_adv = make(8 / 255)(tiny_net, x, y, eps=eps_map, generator=torch.Generator().manual_seed(2))
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert ((x_adv - x).abs() <= eps_map + 1e-7).all(), "|δ| must respect the budget entry by entry"
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert not x_adv.requires_grad


@pytest.mark.parametrize("make", ATTACKS)
def test_zero_budget_returns_the_input(make, tiny_net):
    x, y = batch()
    x_adv = make(0.0)(tiny_net, x, y, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x_adv, x)


def test_constant_map_equals_scalar_budget_bit_for_bit(tiny_net):
    """PART with ε_low = ε must produce exactly AT's adversarial examples for the same seed."""
    x, y = batch()
    attack = PGD(8 / 255, alpha=2 / 255, steps=7)
    scalar = attack(tiny_net, x, y, generator=torch.Generator().manual_seed(5))
    full_map = torch.full((16, 1, 8, 8), 8 / 255)
    mapped = attack(tiny_net, x, y, eps=full_map, generator=torch.Generator().manual_seed(5))
    assert torch.equal(scalar, mapped)


def test_pgd_increases_the_loss(tiny_net):
    x, y = batch(64)
    y = tiny_net(x).argmax(1)
    x_adv = PGD(16 / 255, alpha=4 / 255, steps=10)(tiny_net, x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        per_example_gain = F.cross_entropy(tiny_net(x_adv), y, reduction="none") - F.cross_entropy(tiny_net(x), y, reduction="none")
    assert (per_example_gain > 0).float().mean() > 0.9


def test_model_mode_and_parameter_grads_untouched(tiny_net):
    x, y = batch()
    tiny_net.train()
    bn = tiny_net.features[1]
    before = bn.running_mean.clone()
    PGD(8 / 255, 2 / 255, 3)(tiny_net, x, y, generator=torch.Generator().manual_seed(0))
    assert tiny_net.training, "the caller's train mode must be restored"
    assert torch.equal(bn.running_mean, before), "the attack must run the model in eval mode"
    assert all(p.grad is None for p in tiny_net.parameters())


def test_same_generator_seed_same_examples(tiny_net):
    x, y = batch()
    a = PGD(8 / 255, 2 / 255, 3)(tiny_net, x, y, generator=torch.Generator().manual_seed(3))
    b = PGD(8 / 255, 2 / 255, 3)(tiny_net, x, y, generator=torch.Generator().manual_seed(3))
    c = PGD(8 / 255, 2 / 255, 3)(tiny_net, x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_random_starts():
    x = torch.full((4, 3, 8, 8), 0.5)
    g = torch.Generator().manual_seed(0)
    u = random_start(x, 0.1, "uniform", g)
    assert ((u - x).abs() <= 0.1).all() and (u - x).abs().max() > 0.09
    n = random_start(x, 0.1, "normal", g)
    assert 0.0005 < (n - x).std() < 0.002  # x + 0.001·N(0, 1), as TRADES / MART
    assert torch.equal(random_start(x, 0.1, "none", g), x)


def test_project_is_elementwise_then_box():
    x = torch.tensor([0.0, 0.5, 1.0])
    eps = torch.tensor([0.1, 0.2, 0.3])
    out = project(torch.tensor([-1.0, 2.0, 0.0]), x, eps)
    assert torch.allclose(out, torch.tensor([0.0, 0.7, 0.7]))


class Linear2(nn.Module):
    """logits = W x with hand-picked rows: the MMA selection can be worked out on paper."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.tensor([[1.0, 0, 0, 0],   # class 0: the label
                                                [0, 1.0, 0, 0],   # class 1: the highest wrong logit
                                                [0, 0, 0.2, 0],   # class 2: 3rd, hard to raise
                                                [0, 0, 0, 5.0]]))  # class 3: low logit, easy to raise

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_mma_keeps_the_target_with_the_largest_final_margin():
    model = Linear2()
    x = torch.tensor([[0.9, 0.5, 0.45, 0.0]]).view(1, 1, 2, 2)
    y = torch.tensor([0])
    eps = 0.1
    # Natural logits: [0.9, 0.5, 0.09, 0.0] -> wrong classes ranked 1, 2, 3 (k = 3 takes all of them).
    # Every step pushes x0 down and x_t up; after enough steps each candidate sits at the ε-corner:
    # margins z_t - z_y: t=1: 0.6-0.8=-0.2, t=2: 0.2*0.55-0.8=-0.69, t=3: 5*0.1-0.8=-0.3  -> t=1 wins.
    # Coordinates the target's margin ignores keep their random start, so only x0 and x1 are pinned.
    x_adv = MMA(eps, alpha=0.05, steps=10, k=3)(model, x, y, generator=torch.Generator().manual_seed(0)).flatten()
    assert torch.allclose(x_adv[:2], torch.tensor([0.8, 0.6]), atol=1e-6)
    # A larger budget makes class 3 the best target: 5*0.3 - 0.6 = 0.9 > 0.8 - 0.6 = 0.2.
    x_adv = MMA(0.3, alpha=0.05, steps=20, k=3)(model, x, y, generator=torch.Generator().manual_seed(0))
    assert model(x_adv).argmax(1).item() == 3
