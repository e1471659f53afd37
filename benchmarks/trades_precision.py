"""How much precision TRADES' inner maximisation needs: fp64 vs fp32 vs bf16 (CPU autocast). Prints JSON.

    python benchmarks/trades_precision.py [--seeds 0 1 2] [--epochs 12]

At TRADES' start x + 0.001·N(0, 1) the KL gradient is driven by probability differences of ~1e-6,
below bf16's resolution. Three measurements, on the bundled digits data (small_cnn, the demo's
TRADES setting) and a random ResNet-18 on CIFAR-shaped inputs:

1. first-step gradient signs: share that differ from an fp64 computation, for fp32 and bf16;
2. the KL(f(x') ‖ f(x)) (evaluated in fp64) that the inner attack reaches in fp32, bf16, and bf16
   with the attack kept in fp32 (``PGD(fp32=True)``);
3. TRADES models trained with each of those inner-attack precisions (the outer loss in the run's
   precision), then natural and PGD-20 accuracy on the 360 test digits, per seed.

CPU autocast stands in for CUDA's: both round the same operations (convolutions, linear layers) to bf16.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from part.attacks.pgd import PGD
from part.attacks.suite import correct_per_example
from part.base import config
from part.base.provenance import environment
from part.data.prepared import load_prepared, prepare_digits, save_prepared
from part.models import build_model
from part.training.methods import INNER
from part.training.train import build_engine, run_epoch

PRECISIONS = {"fp32": contextlib.nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
INNER_VARIANTS = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16_fp32_inner": ("bf16", True)}
"""name -> (precision of the run, inner attack forced to fp32)."""


def kl_objective_grad(model, x, x_start, autocast) -> torch.Tensor:
    """The gradient of TRADES' inner objective at ``x_start`` (model in eval mode), in a precision."""
    with autocast():
        p_nat = F.softmax(model(x).float(), dim=1).detach()
        x_start = x_start.clone().requires_grad_(True)
        kl = F.kl_div(F.log_softmax(model(x_start).float(), dim=1), p_nat, reduction="sum")
    return torch.autograd.grad(kl, x_start)[0]


def sign_disagreement(model, x: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Share of first-step gradient signs that differ from fp64, per precision."""
    start = x + 0.001 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    reference = kl_objective_grad(model.double(), x.double(), start.double(), contextlib.nullcontext).sign()
    model.float()
    return {name: float((kl_objective_grad(model, x, start, ac).sign() != reference).float().mean())
            for name, ac in PRECISIONS.items()}


BUDGETS = {"digits": (48 / 255, 12 / 255, 5), "cifar10": (8 / 255, 2 / 255, 10)}
"""(ε, α, steps) of each dataset's TRADES training attack: CIFAR-10's smaller steps leave the KL
signal closer to bf16's resolution for longer."""


def kl_reached(model, x: torch.Tensor, budget: str) -> dict[str, float]:
    """Mean KL(f(x') ‖ f(x)) in fp64 after the inner attack of each precision variant."""
    eps, alpha, steps = BUDGETS[budget]
    out = {}
    for name, (precision, fp32_inner) in INNER_VARIANTS.items():
        attack = PGD(eps, alpha, steps, **INNER["trades"], fp32=fp32_inner)
        with PRECISIONS[precision]():
            x_adv = attack(model, x, torch.zeros(len(x), dtype=torch.long), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            m = model.double()
            kl = F.kl_div(F.log_softmax(m(x_adv.double()), 1), F.softmax(m(x.double()), 1), reduction="batchmean")
            model.float()
        out[name] = float(kl)
    return out


def train_trades(cfg: config.RunConfig, precision: str, fp32_inner: bool):
    """A TRADES run of ``cfg`` with the inner attack and outer loss in the given precisions (CPU)."""
    data = load_prepared(Path(cfg.data_dir) / "digits.pt")
    engine = build_engine(cfg, data.train, data.num_classes, torch.device("cpu"))
    attack = PGD(cfg.attack.eps, cfg.attack.alpha, cfg.attack.steps, **INNER["trades"], fp32=fp32_inner)
    engine = replace(engine, attack=attack, autocast=PRECISIONS[precision])
    seconds = time.perf_counter()
    for epoch in range(cfg.epochs):
        run_epoch(engine, epoch)
    return engine.model.eval(), data, time.perf_counter() - seconds


def accuracies(model, data, cfg: config.RunConfig) -> dict[str, float]:
    pgd20 = PGD(cfg.attack.eps, cfg.attack.alpha, 20)
    natural = correct_per_example(model, data.test).float().mean()
    robust = correct_per_example(model, data.test, pgd20, generator=torch.Generator().manual_seed(0)).float().mean()
    return {"natural": 100 * float(natural), "pgd20": 100 * float(robust)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=12)
    args = p.parse_args()
    torch.set_num_threads(1)  # CPU results independent of the machine's core count
    with tempfile.TemporaryDirectory() as tmp:
        save_prepared(Path(tmp) / "digits.pt", prepare_digits())
        base = {"dataset": "digits", "data_dir": tmp, "device": "cpu", "method": "trades", "epochs": args.epochs}
        result = {"setting": {**base, "data_dir": None}, "runs": []}
        torch.manual_seed(0)
        resnet = build_model("resnet18", 10, 3).eval()
        x_cifar = torch.rand(32, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        result["random_resnet18"] = {"sign_disagreement": sign_disagreement(resnet, x_cifar),
                                     "kl_reached_cifar10_budget": kl_reached(resnet, x_cifar, "cifar10")}
        for seed in args.seeds:
            cfg = config.from_dict({**base, "seed": seed})
            for name, (precision, fp32_inner) in INNER_VARIANTS.items():
                model, data, seconds = train_trades(cfg, precision, fp32_inner)
                x = data.test.images[:256].float() / 255
                row = {"seed": seed, "inner": name, "train_seconds": round(seconds, 2), **accuracies(model, data, cfg)}
                if name == "fp32":
                    row["sign_disagreement"] = sign_disagreement(model, x)
                    row["kl_reached"] = {budget: kl_reached(model, x, budget) for budget in BUDGETS}
                result["runs"].append(row)
                print(json.dumps(row), flush=True)
    for name in INNER_VARIANTS:
        rows = [r for r in result["runs"] if r["inner"] == name]
        result.setdefault("mean", {})[name] = {k: sum(r[k] for r in rows) / len(rows) for k in ("natural", "pgd20")}
    result["environment"] = environment()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
