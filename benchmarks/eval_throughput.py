"""Evaluation throughput: images/s of PGD-20, MMA (optionally MM3) and standard AutoAttack on one
model and device, through the code path of ``part evaluate``. Prints one JSON object.

    python benchmarks/eval_throughput.py --run runs/demo/at --device cpu
    python benchmarks/eval_throughput.py --model resnet18 --size 32 --n 1000 --device cuda --precision bf16

With ``--run`` the run's model and test split are used. Without it, a freshly initialised model on
synthetic images: fine for PGD and MMA, whose cost does not depend on the model's answers, but not
for AutoAttack, which only keeps attacking points that are still robust — on an untrained model it
has almost nothing to do. Its images/s is therefore reported together with the accuracies it saw.
"""

from __future__ import annotations

import argparse
import json

import torch

from part.attacks.suite import attack_specs, evaluation_budget
from part.base.config import parse_budget
from part.base.provenance import environment
from part.base.runtime import resolve_device
from part.evaluation.evaluate import load_run, run_attack, with_precision
from part.models import build_model


def synthetic(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(args.model, args.classes, args.channels).to(device).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand((args.n, args.channels, args.size, args.size), generator=g).to(device)
    y = torch.randint(0, args.classes, (args.n,), generator=g).to(device)
    return model, x, y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="a finished run directory (model and test split); else synthetic")
    p.add_argument("--data-dir", help="prepared datasets, if not the run's")
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--n", type=int, default=None, help="examples (default: the run's whole test split, or 512)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--attacks", default="pgd20,mma,aa")
    p.add_argument("--eps", default=None, help="budget for synthetic runs (default 8/255; a run uses its dataset's)")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()

    device = resolve_device(args.device, "--device")
    if args.run:
        run = load_run(args.run, n_examples=args.n, device=str(device), precision=args.precision,
                       data_dir=args.data_dir)
        model, x, y = run.model, run.x, run.y
        eps, alpha = evaluation_budget(run.cfg.dataset)
        what = {"run": args.run, "dataset": run.cfg.dataset, "model": run.cfg.model, "method": run.cfg.method}
    else:
        args.n = args.n or 512
        model, x, y = synthetic(args, device)
        model = with_precision(model, args.precision, device)
        eps = parse_budget(args.eps or "8/255")
        alpha = eps / 4
        what = {"run": None, "dataset": f"synthetic {args.channels}x{args.size}x{args.size}", "model": args.model,
                "classes": args.classes}

    specs = attack_specs(eps, alpha)
    run_attack(model, x[:64], y[:64], "pgd20", specs["pgd20"], batch_size=args.batch_size, log=None)  # warm-up
    results = {}
    for name in [a.strip() for a in args.attacks.split(",") if a.strip()]:
        r = run_attack(model, x, y, name, specs[name], batch_size=args.batch_size, log=None)
        results[name] = {"seconds": r.seconds, "images_per_second": len(y) / r.seconds,
                         "accuracy": r.accuracy, "natural_accuracy": r.natural_accuracy}
    env = environment()
    out = {**what, "device": str(device), "device_name": env["device_name"], "threads": torch.get_num_threads(),
           "n": len(y), "batch_size": args.batch_size, "precision": args.precision, "eps": eps, "alpha": alpha,
           "results": results, "versions": env["versions"], "git_revision": env["git_revision"]}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        from part.base.files import write_text

        write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
