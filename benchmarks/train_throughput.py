"""Training throughput: an AT epoch, a PART (s = 1) epoch with its ε-map refresh, the refresh alone,
and the authors'-release style per-image CAM loop, measured side by side. Prints one JSON object.

    python benchmarks/train_throughput.py --model resnet18 --size 32 --n 2048 --device cuda --precision bf16

Data are synthetic uint8 images (speed does not depend on content). Targets from the engine issue:
PART (s = 1) epoch ≤ 1.10 × AT epoch, batched refresh ≥ 50 × faster than the per-image loop.
``benchmarks/device_check.py`` measures the same across precisions, compile modes and batch sizes.
"""

from __future__ import annotations

import argparse
import json

import torch

from harness import release_style_maps, synthetic_split, timed_epoch
from part.base import config
from part.base.provenance import environment
from part.base.runtime import resolve_device
from part.models import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--n", type=int, default=512, help="images per timed epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", default="none", choices=["none", "default", "reduce-overhead", "max-autotune"])
    p.add_argument("--loop-images", type=int, default=64, help="images timed in the per-image loop")
    args = p.parse_args()

    device = resolve_device(args.device, "--device")
    split = synthetic_split(args.n, args.channels, args.size, args.classes)
    common = {"dataset": "cifar10", "model": args.model, "device": str(device), "batch_size": args.batch_size,
              "epochs": 2, "warmup_epochs": 0, "precision": args.precision, "channels_last": args.channels_last,
              "compile": args.compile, "attack": {"steps": args.steps}}
    results = {"benchmark": "train_throughput", "args": vars(args), "device": str(device), "environment": environment()}
    for method in ("at", "part"):
        timed = timed_epoch(config.from_dict({**common, "method": method}), split, args.classes, device)
        results[f"{method}_epoch_seconds"] = timed["seconds"]
        results[f"{method}_images_per_second"] = timed["images_per_second"]
        if method == "part":
            results["refresh_seconds"] = timed["refresh_seconds"]
            results["refresh_images_per_second"] = args.n / timed["refresh_seconds"]
    results["part_over_at_epoch"] = results["part_epoch_seconds"] / results["at_epoch_seconds"]
    torch.manual_seed(0)
    model = build_model(args.model, args.classes, args.channels).to(device)
    loop_images = split.images[: args.loop_images].to(device).float().div(255)
    results["per_image_loop_images_per_second"] = release_style_maps(model, loop_images)
    results["batched_over_loop_speedup"] = results["refresh_images_per_second"] / results["per_image_loop_images_per_second"]
    results["targets_met"] = {"part_epoch_le_1.10x_at": results["part_over_at_epoch"] <= 1.10,
                              "refresh_ge_50x_loop": results["batched_over_loop_speedup"] >= 50}
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
