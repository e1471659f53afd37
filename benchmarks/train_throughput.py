"""Training throughput: an AT epoch, a PART (s = 1) epoch with its ε-map refresh, the refresh alone,
and the authors'-release style per-image CAM loop, measured side by side. Prints one JSON object.

    python benchmarks/train_throughput.py --model resnet18 --size 32 --n 2048 --device cuda --precision bf16

Data are synthetic uint8 images (speed does not depend on content). Targets from the engine issue:
PART (s = 1) epoch ≤ 1.10 × AT epoch, batched refresh ≥ 50 × faster than the per-image loop.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from part import config
from part.data import DeviceLoader, Split
from part.epsmap import EpsMapStore
from part.io import environment
from part.methods import OUTER_LOSSES, training_attack
from part.train import autocast_factory, build_for, resolve_device, run_epoch


def synthetic_split(n: int, channels: int, size: int, classes: int) -> Split:
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=g),
                 torch.randint(0, classes, (n,), generator=g))


def release_style_maps(model, images: torch.Tensor) -> float:
    """The release's refresh, one image at a time: grad-cam package, PIL bicubic resize, jet, standardise.

    Returns images/s. Mirrors its structure (per-image CAM call and CPU post-processing), not its code.
    """
    from matplotlib import colormaps
    from PIL import Image
    from pytorch_grad_cam import GradCAM

    jet = colormaps["jet"]
    model.eval()
    t0 = time.perf_counter()
    with GradCAM(model=model, target_layers=[model.cam_layer]) as cam:
        for img in images:
            gray = cam(input_tensor=img[None], targets=None)[0]
            resized = np.asarray(Image.fromarray(gray).resize(img.shape[-2:][::-1], Image.BICUBIC))
            rgb = jet(np.clip(resized, 0, 1) ** 2)[..., :3]
            z = (rgb - rgb.mean()) / rgb.std()
            torch.from_numpy(z > 1).to(images.device)
    return len(images) / (time.perf_counter() - t0)


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

    device = resolve_device(args.device)
    split = synthetic_split(args.n, args.channels, args.size, args.classes)
    common = {"dataset": "cifar10", "model": args.model, "device": str(device), "batch_size": args.batch_size,
              "epochs": 2, "warmup_epochs": 0, "precision": args.precision, "channels_last": args.channels_last,
              "compile": args.compile, "attack": {"steps": args.steps}}
    results = {"benchmark": "train_throughput", "args": vars(args), "device": str(device), "environment": environment()}
    model = None
    for method in ("at", "part"):
        cfg = config.from_dict({**common, "method": method})
        model = build_for(cfg, args.classes, args.channels, device)
        forward = model if cfg.compile == "none" else torch.compile(
            model, mode=None if cfg.compile == "default" else cfg.compile)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loader = DeviceLoader(split, cfg.batch_size, device, shuffle=True, crop_padding=4, flip=True,
                              channels_last=cfg.channels_last)
        store = EpsMapStore(cfg)
        attack = training_attack(cfg.base_method, cfg.attack)
        autocast = autocast_factory(cfg.precision, device)
        epochs = [run_epoch(cfg, e, model, optimizer, loader, store, attack, OUTER_LOSSES[cfg.base_method], autocast,
                            forward)
                  for e in range(2)]  # the first epoch warms up kernels / compilation
        timed = epochs[-1]
        results[f"{method}_epoch_seconds"] = timed["seconds"]
        results[f"{method}_images_per_second"] = timed["images_per_second"]
        if method == "part":
            results["refresh_seconds"] = timed["refresh_seconds"]
            results["refresh_images_per_second"] = args.n / timed["refresh_seconds"]
    results["part_over_at_epoch"] = results["part_epoch_seconds"] / results["at_epoch_seconds"]
    loop_images = split.images[: args.loop_images].to(device).float().div(255)
    results["per_image_loop_images_per_second"] = release_style_maps(model, loop_images)
    results["batched_over_loop_speedup"] = results["refresh_images_per_second"] / results["per_image_loop_images_per_second"]
    results["targets_met"] = {"part_epoch_le_1.10x_at": results["part_over_at_epoch"] <= 1.10,
                              "refresh_ge_50x_loop": results["batched_over_loop_speedup"] >= 50}
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
