"""The GPU path, proven in one short run: smoke-test every code path of training on this device and
measure the speed targets, writing ``device_check.json`` and ``summary.txt`` to ``--out``.

    python benchmarks/device_check.py --out device_check            # a GPU: ≤ 8 minutes on an H100/H200
    python benchmarks/device_check.py --out /tmp/dc --device cpu --tiny --keep   # seconds; what the tests run

Why one command: GPU time comes in short, rare windows, and most of ``part`` that runs only on CUDA
(bf16 autocast, channels_last, the three compile modes, CUDA generators, the device-resident loader, the
nccl path) can only be proven there. So the check says everything at once, and every stage and every
combination is timed and guarded: an exception is recorded with its traceback and the rest goes on.

Stages (each gets a share of ``--budget-seconds``; time a stage leaves unused passes to the next; a
combination is started only if the time it is expected to take is left, else recorded as skipped):

* ``smoke``: every method × precision × compile mode, a few batches of ResNet-18 on synthetic
  CIFAR-shaped data: finite loss, ‖δ‖∞ ≤ ε_map element-wise and x + δ ∈ [0, 1] (checked on the device),
  no host↔device synchronisation inside the batch loop (CUDA's sync debug mode, counted in the epoch
  after the warm-up one), and a run killed after its first checkpoint resuming, through ``part.training.train``,
  to the uninterrupted run's weights — for the PART methods its resumed epoch refreshes nothing and projects
  onto the ε-maps the killed run computed and checkpointed;
* ``speed``: PGD-10 AT and PART (s = 1) epochs, refresh included, per batch size, precision and compile
  mode (TRADES and MART eagerly), in images/s and seconds per 50 k-image epoch;
* ``refresh``: the batched ε-map refresh alone, and the release's per-image CAM loop;
* ``wide``: the WRN-34-10 AT epoch;
* ``autoattack``: standard AutoAttack's images/s on briefly adversarially trained models of the
  bundled digits data, at their size and upsampled to CIFAR's;
* ``distributed``: ``part train`` under torchrun (nccl on CUDA; two gloo processes on the CPU).

Every epoch time is measured on a few batches after a warm-up epoch and extrapolated linearly to 50 000
images; the JSON says so. ``--tiny`` shrinks every size (small_cnn on digits-shaped data) so the whole
check runs on the CPU in seconds; it proves the script, not the speed. On the CPU bf16 and compiling
are skipped (their CPU twins are tests/test_cpu_paths.py's). ``--keep`` keeps the datasets and runs it worked on
in ``--out``/work, so that its report can be checked against them. ``benchmarks/cost_table.py`` turns a non-tiny
JSON into the cost table of ``docs/cost.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from harness import EPOCH_IMAGES, release_style_maps, synthetic_dataset, timed_epoch
from part.attacks.suite import attack_specs, evaluation_budget
from part.base import config, files, provenance, torchfiles
from part.base.rundir import RunPaths
from part.base.runtime import autocast_factory, resolve_device, synchronize
from part.data.prepared import DeviceLoader, PreparedDataset, Split, prepare_digits, save_prepared
from part.evaluation.evaluate import load_run, run_attack
from part.training import distributed
from part.training.epsmap import EpsMapStore
from part.training.train import build_engine, build_for, run_epoch, train

FORMAT_VERSION = 1
REPO = Path(__file__).resolve().parents[1]
METHODS = ("at", "trades", "mart", "part", "part_trades", "part_mart")
PRECISIONS = ("fp32", "bf16")
COMPILES = ("none", "default", "reduce-overhead", "max-autotune")
BOUND_TOLERANCE = 1e-6
"""float32 rounding of x ± ε near 1: a projected δ may exceed its budget by an ulp."""
RESUME_TOLERANCE = {"cpu": 0.0, "fp32": 1e-3, "bf16": 1e-2}
"""Largest relative L2 distance between resumed and uninterrupted weights: the CPU is bit-exact; CUDA's
kernels (cuDNN's convolution backward) are not deterministic, so two runs differ by rounding."""
AA_IMAGES_TARGET = 10_000
AA_CIFAR_ESTIMATE = 60.0
"""Seconds the CIFAR-sized AutoAttack measurement should take on a GPU (4 AT epochs on 1 437 images + AA on 100)."""
STAGE_SHARES = {"smoke": 0.3, "speed": 0.3, "refresh": 0.06, "wide": 0.1, "autoattack": 0.16, "distributed": 0.08}
FIRST_ESTIMATES = {"none": 10.0, "default": 90.0, "reduce-overhead": 90.0, "max-autotune": 240.0}
"""Seconds a combination is expected to take before one of its compile mode has run (then: the last one's)."""


@dataclass(frozen=True)
class Sizes:
    """The sizes of one mode of the check: the real one (GPU) or ``--tiny`` (CPU, seconds)."""
    dataset: str  # the synthetic training set's shape, by part.data.prepared.SHAPES name
    model: str
    wide_model: str
    batch_sizes: tuple[int, ...]
    smoke_batches: int
    smoke_steps: int
    speed_batches: int
    steps: int
    crop_padding: int
    loop_images: int
    aa_method: str  # natural with --tiny: every point falls to APGD-CE, so AutoAttack ends in seconds
    aa_train_epochs: int
    aa_images: int
    aa_batch_sizes: tuple[int, ...]
    aa_cifar_images: int  # 0: no CIFAR-sized AutoAttack measurement


FULL = Sizes("cifar10", "resnet18", "wrn34_10", (128, 512), 3, 3, 8, 10, 4, 256, "at", 4, 200, (200, 100, 50), 100)
TINY = Sizes("digits", "small_cnn", "small_cnn", (16,), 2, 2, 2, 2, 1, 4, "natural", 2, 10, (10, 5), 0)


class Budget:
    """A deadline; ``left()`` seconds until it."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds

    def left(self) -> float:
        return self.deadline - time.perf_counter()


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    tmp: Path
    budget: Budget | None = None  # the running stage's

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def run_config(self, data_dir: Path, **keys: Any):
        raw = {"dataset": self.sizes.dataset, "data_dir": str(data_dir), "model": self.sizes.model,
               "device": str(self.device), "augment": {"crop_padding": self.sizes.crop_padding, "flip": True},
               "attack": {"steps": self.sizes.steps}}
        return config.from_dict(config.deep_merge(raw, keys))

    def prepared(self, name: str, ds: PreparedDataset) -> Path:
        """``ds`` saved as ``{name}/{ds.name}.pt`` under the temporary directory; returns its data_dir."""
        data_dir = self.tmp / name
        save_prepared(data_dir / f"{ds.name}.pt", ds)
        return data_dir


# ---------------------------------------------------------------------------------------------
# Guards and budgets


def guarded(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """``fn(*args)`` timed; an exception becomes the record's error and traceback instead of escaping."""
    t0 = time.perf_counter()
    try:
        record = {"status": "ok", "result": fn(*args)}
    except Exception as err:  # the point of the check: one failure must not hide the rest
        record = {"status": "error", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    record["seconds"] = time.perf_counter() - t0
    return record


def platform_skip(ctx: Context, precision: str, compile_mode: str) -> str | None:
    """Why a combination cannot run on this device, or None."""
    if ctx.cuda:
        return None
    if precision == "bf16":
        return "bf16 is checked on CUDA only (its CPU twin is tests/test_cpu_paths.py's)"
    if compile_mode != "none":
        return "compiling is checked on CUDA only (inductor on the CPU is slow and not the GPU path)"
    return None


def run_combos(ctx: Context, combos: list[dict[str, Any]], run_one: Callable[[dict[str, Any]], dict[str, Any]],
               estimates: dict[str, float]) -> list[dict[str, Any]]:
    """Each combination guarded, in order, while the stage's budget lasts; the rest recorded as skipped.

    ``estimates`` (seconds by compile mode) is updated with each finished combination's time, so a
    mode's later combinations, which find its compilation caches warm, are budgeted by what it took.
    """
    records = []
    for combo in combos:
        mode = combo.get("compile", "none")
        reason = platform_skip(ctx, combo.get("precision", "fp32"), mode)
        if reason is None and ctx.budget.left() < estimates[mode]:
            reason = f"time budget: {max(ctx.budget.left(), 0):.0f} s left in the stage, ~{estimates[mode]:.0f} s needed"
        if reason is not None:
            records.append({**combo, "status": "skipped", "reason": reason})
            continue
        if mode != "none":
            torch._dynamo.reset()  # each combination compiles afresh (recompile limits, fair timings)
        record = guarded(run_one, combo)
        estimates[mode] = record["seconds"]
        records.append({**combo, **record})
    return records


# ---------------------------------------------------------------------------------------------
# Smoke: correctness of every combination


class BoundsWatch:
    """Wraps a training attack and keeps, on the device, how far its examples leave their budget.

    Tracks max(|x_adv − x| − ε_map) and the range of x_adv over every call as 0-d device tensors, so
    watching adds no host↔device synchronisation to the batch loop; :meth:`read` reads them once.
    """

    def __init__(self, attack: Callable, device: torch.device):
        self.attack = attack
        self.excess = torch.full((), -math.inf, device=device)
        self.lowest = torch.full((), math.inf, device=device)
        self.highest = torch.full((), -math.inf, device=device)

    def __call__(self, model, x, y, eps=None, generator=None):
        x_adv = self.attack(model, x, y, eps=eps, generator=generator)
        budget = self.attack.eps if eps is None else eps
        self.excess = torch.maximum(self.excess, ((x_adv.float() - x.float()).abs() - budget).amax())
        self.lowest = torch.minimum(self.lowest, x_adv.amin())
        self.highest = torch.maximum(self.highest, x_adv.amax())
        return x_adv

    def read(self) -> dict[str, Any]:
        excess, low, high = (t.item() for t in (self.excess, self.lowest, self.highest))
        return {"max_delta_over_eps_map": excess, "tolerance": BOUND_TOLERANCE, "x_adv_range": [low, high],
                "delta_within_eps_map": excess <= BOUND_TOLERANCE, "x_adv_in_unit_box": 0.0 <= low and high <= 1.0}


@contextlib.contextmanager
def counting_syncs(counts: list[int]):
    """Appends to ``counts`` the host↔device synchronisations CUDA's sync debug mode reports in the block."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield
        finally:
            torch.cuda.set_sync_debug_mode("default")
            counts.append(sum("synchroniz" in str(w.message) for w in caught))


class SyncCountingLoader:
    """A DeviceLoader whose training passes count the synchronisations made while their batches are
    consumed: exactly ``run_epoch``'s batch loop. Plain passes (the ε-map refresh) are not counted."""

    def __init__(self, loader):
        self.loader = loader
        self.counts: list[int] = []  # one per training pass (CUDA only)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def epoch(self, generator=None, *, plain=False):
        if plain or self.loader.device.type != "cuda":
            yield from self.loader.epoch(generator, plain=plain)
            return
        with counting_syncs(self.counts):
            yield from self.loader.epoch(generator)


class _Interrupted(Exception):
    """Stands in for the process being killed right after its first checkpoint."""


def _interrupt_after_checkpoint(paths: RunPaths) -> Callable[[str], None]:
    def log(_line: str) -> None:
        if paths.checkpoint.is_file():
            raise _Interrupted
    return log


def weight_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, float]:
    """Max absolute and relative L2 difference over every floating tensor; integer buffers must be equal."""
    floats = [k for k in a if a[k].is_floating_point()]
    if any(not torch.equal(a[k], b[k]) for k in a if k not in floats):
        return {"max_abs": math.inf, "relative_l2": math.inf}
    diff = torch.cat([(a[k].double() - b[k].double()).flatten() for k in floats])
    ref = torch.cat([a[k].double().flatten() for k in floats])
    return {"max_abs": diff.abs().max().item(), "relative_l2": (diff.norm() / ref.norm()).item()}


def resume_check(cfg, root: Path) -> dict[str, Any]:
    """``part.training.train.train`` uninterrupted vs killed after its first checkpoint and run again.

    ``refreshed`` lists, per epoch of the resumed run's log, whether it recomputed the ε-maps: with the
    smoke's schedule a PART run refreshes before its first epoch only, so the epoch after the kill reads the
    maps restored from the checkpoint (``stored_maps_read``) — the path a resume exists for."""
    whole, cut = RunPaths(root / "whole"), RunPaths(root / "cut")
    train(cfg, whole.root, log=lambda _: None)
    try:
        train(cfg, cut.root, log=_interrupt_after_checkpoint(cut))
        interrupted = False
    except _Interrupted:
        interrupted = True
    lines: list[str] = []
    train(cfg, cut.root, log=lines.append)
    distance = weight_distance(torchfiles.load_torch(whole.model), torchfiles.load_torch(cut.model))
    tolerance = RESUME_TOLERANCE["cpu" if cfg.device == "cpu" else cfg.precision]
    refreshed = [json.loads(line)["refreshed"] for line in cut.log.read_text().splitlines()]
    stored = refreshed == [True] + [False] * (cfg.epochs - 1) if cfg.pixel_reweighted else None
    return {"interrupted": interrupted, "resumed": any("resuming" in line for line in lines), **distance,
            "tolerance_relative_l2": tolerance, "refreshed": refreshed, "stored_maps_read": stored,
            "equal": interrupted and distance["relative_l2"] <= tolerance and stored is not False}


def smoke_one(ctx: Context, ds: PreparedDataset, data_dir: Path, combo: dict[str, Any]) -> dict[str, Any]:
    """Two epochs watched (the first refreshes the ε-maps, the second uses them: refresh every 3 PART epochs
    leaves the second without one), then the resume check, whose second epoch reads the checkpointed maps."""
    cfg = ctx.run_config(data_dir, method=combo["method"], precision=combo["precision"], compile=combo["compile"],
                         channels_last=combo["precision"] == "bf16", batch_size=ctx.sizes.batch_sizes[0],
                         epochs=2, warmup_epochs=0, mask={"refresh_every": 3},
                         attack={"steps": ctx.sizes.smoke_steps})
    engine = build_engine(cfg, ds.train, ds.num_classes, ctx.device)
    watch, loader = BoundsWatch(engine.attack, ctx.device), SyncCountingLoader(engine.loader)
    engine = replace(engine, attack=watch, loader=loader)
    losses = [run_epoch(engine, e)["loss"] for e in range(cfg.epochs)]
    bounds = watch.read()
    syncs = loader.counts[-1] if loader.counts else None  # the epoch after warm-up/compilation
    resume = resume_check(cfg, ctx.tmp / "resume" / "-".join(combo.values()))
    checks = {"loss_finite": all(math.isfinite(v) for v in losses), "delta_within_eps_map": bounds["delta_within_eps_map"],
              "x_adv_in_unit_box": bounds["x_adv_in_unit_box"], "no_sync_in_batch_loop": syncs in (0, None),
              "resume_equal": resume["equal"] and resume["resumed"]}
    return {"passed": all(checks.values()), "checks": checks, "losses": losses, "bounds": bounds,
            "syncs_in_batch_loop": syncs, "syncs_per_epoch": loader.counts, "resume": resume}


def stage_smoke(ctx: Context) -> dict[str, Any]:
    n = ctx.sizes.smoke_batches * ctx.sizes.batch_sizes[0]
    ds = synthetic_dataset(ctx.sizes.dataset, n, 8)
    data_dir = ctx.prepared("smoke", ds)
    combos = [{"method": m, "precision": p, "compile": c} for c in COMPILES for p in PRECISIONS for m in METHODS]
    combos.sort(key=lambda c: (c["compile"] != "none", c["precision"] != "bf16", COMPILES.index(c["compile"])))
    records = run_combos(ctx, combos, lambda c: smoke_one(ctx, ds, data_dir, c), dict(FIRST_ESTIMATES))
    ran = [r for r in records if r["status"] != "skipped"]
    passed = [r for r in ran if r["status"] == "ok" and r["result"]["passed"]]
    return {"images": n, "batch_size": ctx.sizes.batch_sizes[0], "attack_steps": ctx.sizes.smoke_steps,
            "model": ctx.sizes.model, "sync_counting": "CUDA's sync debug mode" if ctx.cuda else "not on the CPU",
            "combinations": records, "ran": len(ran), "passed": len(passed), "skipped": len(records) - len(ran),
            "all_passed": bool(ran) and len(passed) == len(ran)}


# ---------------------------------------------------------------------------------------------
# Speed


def _speed_combos(sizes: Sizes) -> list[dict[str, Any]]:
    """Eager first (cheap, and the baseline every ratio needs), then each compile mode, most promising first."""
    eager = [{"method": m, "batch_size": b, "precision": p, "compile": "none"}
             for b in sizes.batch_sizes for p in PRECISIONS for m in ("at", "part")]
    families = [{"method": m, "batch_size": sizes.batch_sizes[0], "precision": p, "compile": "none"}
                for p in PRECISIONS for m in ("trades", "mart")]
    compiled = [{"method": m, "batch_size": b, "precision": p, "compile": c}
                for c in ("reduce-overhead", "max-autotune", "default") for p in ("bf16", "fp32")
                for b in sizes.batch_sizes for m in ("at", "part")]
    return eager + families + compiled


def speed_one(ctx: Context, model: str, combo: dict[str, Any], batches: int) -> dict[str, Any]:
    cfg = ctx.run_config(ctx.tmp, model=model, method=combo["method"], precision=combo["precision"],
                         compile=combo["compile"], channels_last=combo["precision"] == "bf16",
                         batch_size=combo["batch_size"], epochs=2, warmup_epochs=0, mask={"refresh_every": 1})
    data = synthetic_dataset(ctx.sizes.dataset, batches * combo["batch_size"], 1)
    return timed_epoch(cfg, data.train, data.num_classes, ctx.device)


def stage_speed(ctx: Context) -> dict[str, Any]:
    records = run_combos(ctx, _speed_combos(ctx.sizes),
                         lambda c: speed_one(ctx, ctx.sizes.model, c, ctx.sizes.speed_batches), dict(FIRST_ESTIMATES))
    return {"model": ctx.sizes.model, "attack_steps": ctx.sizes.steps, "batches_timed": ctx.sizes.speed_batches,
            "channels_last": "with bf16", "measurements": records}


def stage_wide(ctx: Context) -> dict[str, Any]:
    precision = "bf16" if ctx.cuda else "fp32"
    combos = [{"method": "at", "batch_size": ctx.sizes.batch_sizes[0], "precision": precision, "compile": c}
              for c in ("none", "reduce-overhead", "max-autotune")]
    estimates = {k: 3 * v for k, v in FIRST_ESTIMATES.items()}
    records = run_combos(ctx, combos, lambda c: speed_one(ctx, ctx.sizes.wide_model, c, ctx.sizes.speed_batches // 2),
                         estimates)
    return {"model": ctx.sizes.wide_model, "attack_steps": ctx.sizes.steps, "measurements": records}


# ---------------------------------------------------------------------------------------------
# Refresh alone, and the release's per-image loop


def refresh_one(ctx: Context, split: Split, classes: int, precision: str, batch_size: int) -> dict[str, Any]:
    cfg = ctx.run_config(ctx.tmp, method="part", precision=precision, batch_size=batch_size, epochs=2,
                         warmup_epochs=0)
    model = build_for(cfg, classes, split.images.shape[1], ctx.device)
    loader = DeviceLoader(split, batch_size, ctx.device)
    store, autocast = EpsMapStore(cfg), autocast_factory(precision, ctx.device)
    store.refresh(model, loader, 0, autocast)  # warm-up
    synchronize(ctx.device)
    t0 = time.perf_counter()
    store.refresh(model, loader, 1, autocast)
    synchronize(ctx.device)
    seconds = time.perf_counter() - t0
    return {"images": len(split), "seconds": seconds, "images_per_second": len(split) / seconds,
            "refresh_seconds_50k": seconds * EPOCH_IMAGES / len(split),
            "important_share": store.masks.float().mean().item()}


def loop_one(ctx: Context, split: Split, classes: int) -> dict[str, Any]:
    cfg = ctx.run_config(ctx.tmp, method="part")
    model = build_for(cfg, classes, split.images.shape[1], ctx.device)
    images = split.images[: ctx.sizes.loop_images].to(ctx.device).float().div(255)
    ips = release_style_maps(model, images)
    return {"images": len(images), "images_per_second": ips, "refresh_seconds_50k": EPOCH_IMAGES / ips}


def stage_refresh(ctx: Context) -> dict[str, Any]:
    data = synthetic_dataset(ctx.sizes.dataset, ctx.sizes.speed_batches * max(ctx.sizes.batch_sizes), 1)
    combos = [{"precision": p, "batch_size": b, "compile": "none"} for b in ctx.sizes.batch_sizes for p in PRECISIONS]
    records = run_combos(ctx, combos, lambda c: refresh_one(ctx, data.train, data.num_classes, c["precision"],
                                                            c["batch_size"]), dict(FIRST_ESTIMATES))
    loop = guarded(loop_one, ctx, data.train, data.num_classes)
    best = max((r["result"]["images_per_second"] for r in records if r["status"] == "ok"), default=None)
    speedup = best / loop["result"]["images_per_second"] if best and loop["status"] == "ok" else None
    return {"model": ctx.sizes.model, "batched": records, "per_image_loop": loop,
            "batched_over_loop_speedup": speedup}


# ---------------------------------------------------------------------------------------------
# AutoAttack


DDP_TRAIN_IMAGES = 151
"""Digits training images of the multi-process run: an uneven last global batch (23 = 12 + 11), as in
tests/test_distributed.py."""


def _digits(n: int | None = None) -> PreparedDataset:
    """The bundled digits, the training split cut to its first ``n`` images."""
    full = prepare_digits()
    n = n or len(full.train)
    return PreparedDataset("digits", Split(full.train.images[:n], full.train.labels[:n]), full.test, 10, full.meta)


def _cifar_sized(ds: PreparedDataset) -> PreparedDataset:
    """Digits at CIFAR-10's shape (3×32×32, bilinear): AutoAttack's cost at CIFAR's size on a model that
    can become robust in seconds. Saved under the name cifar10 so the CIFAR-10 recipe (ε = 8/255) applies."""
    def upsample(split: Split) -> Split:
        x = F.interpolate(split.images.float(), size=(32, 32), mode="bilinear", align_corners=False)
        return Split(x.round().clamp(0, 255).to(torch.uint8).expand(-1, 3, -1, -1).contiguous(), split.labels)
    return PreparedDataset("cifar10", upsample(ds.train), upsample(ds.test), 10, {**ds.meta, "upsampled": "32x32x3"})


def autoattack_one(ctx: Context, ds: PreparedDataset, model: str, n: int, batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    """A few epochs of ``part train``, then standard AutoAttack through ``part evaluate``'s code path."""
    data_dir = ctx.prepared(f"aa-{ds.name}", ds)
    cfg = config.from_dict({"dataset": ds.name, "data_dir": str(data_dir), "model": model, "method": ctx.sizes.aa_method,
                            "device": str(ctx.device), "epochs": ctx.sizes.aa_train_epochs, "warmup_epochs": 0})
    run_dir = ctx.tmp / f"aa-run-{ds.name}"
    train(cfg, run_dir, log=lambda _: None)
    run = load_run(run_dir, n_examples=n, device=str(ctx.device))
    eps, alpha = evaluation_budget(ds.name)
    spec = attack_specs(eps, alpha)["aa"]
    per_batch, last = [], 0.0
    for batch_size in batch_sizes:  # largest first: the cheapest; a smaller batch takes at least as long
        if ctx.budget.left() < last:
            per_batch.append({"batch_size": batch_size, "status": "skipped",
                              "reason": f"time budget: {max(ctx.budget.left(), 0):.0f} s left, ~{last:.0f} s needed"})
            continue
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = run_attack(run.model, run.x, run.y, "aa", spec, batch_size=batch_size, log=None)
        last = r.seconds
        per_batch.append({"batch_size": batch_size, "status": "ok", "seconds": r.seconds, "images_per_second": n / r.seconds,
                          "robust_accuracy": r.accuracy, "natural_accuracy": r.natural_accuracy,
                          "warnings": sorted({str(w.message) for w in caught})})
    return {"dataset": f"{ds.name} {tuple(ds.image_shape)}", "model": model, "method": cfg.method, "train_epochs": cfg.epochs,
            "images": n, "eps": eps, "per_batch_size": per_batch}


def stage_autoattack(ctx: Context) -> dict[str, Any]:
    digits = _digits()
    out = {"digits": guarded(autoattack_one, ctx, digits, "small_cnn", ctx.sizes.aa_images, ctx.sizes.aa_batch_sizes)}
    n = ctx.sizes.aa_cifar_images
    if not n:
        out["cifar_sized"] = {"status": "skipped", "reason": "--tiny"}
    elif ctx.budget.left() < AA_CIFAR_ESTIMATE:
        out["cifar_sized"] = {"status": "skipped", "reason": f"time budget: {max(ctx.budget.left(), 0):.0f} s left"}
    else:
        out["cifar_sized"] = guarded(autoattack_one, ctx, _cifar_sized(digits), ctx.sizes.model, n, (n,))
    return out


# ---------------------------------------------------------------------------------------------
# Multi-process path


def stage_distributed(ctx: Context) -> dict[str, Any]:
    """``part train`` under torchrun: one process per GPU (nccl), or two gloo processes on the CPU."""
    nproc = min(torch.cuda.device_count(), 2) if ctx.cuda else 2
    data_dir = ctx.prepared("ddp", _digits(DDP_TRAIN_IMAGES))
    cfg_path = ctx.tmp / "ddp.yaml"
    cfg_path.write_text(json.dumps({"dataset": "digits", "data_dir": str(data_dir), "device": ctx.device.type,
                                    "method": "part", "epochs": 2, "warmup_epochs": 1}))
    out = ctx.tmp / "ddp-run"
    env = {**os.environ, "NCCL_DEBUG": "INFO", "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(distributed.torchrun_command(nproc, cfg_path, out), capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=max(ctx.budget.left(), 30))
    info = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    joined = nproc > 1 or "NCCL INFO" in proc.stdout + proc.stderr
    return {"processes": nproc, "backend": "nccl" if ctx.cuda else "gloo", "returncode": proc.returncode,
            "processes_recorded": info.get("processes"), "final_loss": (info.get("final") or {}).get("loss"),
            "process_group_joined": joined,
            "note": None if joined else "no NCCL INFO line in the output: the nccl communicator was not set up",
            "passed": proc.returncode == 0 and info.get("processes") == nproc,
            "output_tail": (proc.stdout + proc.stderr)[-3000:]}


STAGES: dict[str, Callable[[Context], dict[str, Any]]] = {
    "smoke": stage_smoke, "speed": stage_speed, "refresh": stage_refresh, "wide": stage_wide,
    "autoattack": stage_autoattack, "distributed": stage_distributed}


# ---------------------------------------------------------------------------------------------
# Targets, cost basis, summary


def _ok(records: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in records if r["status"] == "ok" and all(r.get(k) == v for k, v in match.items())]


def _setting(r: dict[str, Any]) -> str:
    return f"batch {r['batch_size']}, {r['precision']}, compile {r['compile']}"


def _result(stages: dict[str, Any], name: str) -> dict[str, Any] | None:
    stage = stages.get(name, {})
    return stage.get("result") if stage.get("status") == "ok" else None


def best_at(stages: dict[str, Any], batch_size: int) -> tuple[dict, dict | None] | None:
    """The fastest AT measurement at ``batch_size`` and the PART one of the same setting (or None)."""
    speed = _result(stages, "speed")
    ats = _ok(speed["measurements"], method="at", batch_size=batch_size) if speed else []
    if not ats:
        return None
    at = min(ats, key=lambda r: r["result"]["epoch_seconds_50k"])
    part = _ok(speed["measurements"], method="part", batch_size=batch_size, precision=at["precision"],
               compile=at["compile"])
    return at, part[0] if part else None


def _target(name: str, what: str, limit: float, value: float | None, setting: str | None, unit: str) -> dict[str, Any]:
    status = "not measured" if value is None else ("met" if value <= limit else "not met")
    return {"name": name, "what": what, "limit": limit, "unit": unit, "value": value, "setting": setting,
            "status": status}


def targets(stages: dict[str, Any], sizes: Sizes) -> list[dict[str, Any]]:
    """The issue's H100/H200 targets, each met / not met / not measured (always the latter with --tiny)."""
    real = sizes is FULL
    batch = sizes.batch_sizes[0]
    best = best_at(stages, batch) if real else None
    at, part = best if best else (None, None)
    refresh = _result(stages, "refresh") if real else None
    refreshes = _ok(refresh["batched"], batch_size=batch) if refresh else []
    fastest_refresh = min(refreshes, key=lambda r: r["result"]["refresh_seconds_50k"], default=None)
    wide = _result(stages, "wide") if real else None
    wides = _ok(wide["measurements"], precision="bf16") if wide else []
    fastest_wide = min(wides, key=lambda r: r["result"]["epoch_seconds_50k"], default=None)
    aa = (_result(stages, "autoattack") or {}).get("cifar_sized", {}) if real else {}
    aa_rate = aa["result"]["per_batch_size"][0]["images_per_second"] if aa.get("status") == "ok" else None
    return [
        _target("at_epoch", f"ResNet-18 PGD-10 AT epoch, 50 k images, batch {batch}", 10.0,
                at and at["result"]["epoch_seconds_50k"], at and _setting(at), "s"),
        _target("refresh", f"ε-map refresh of 50 k images, batch {batch}", 2.0,
                fastest_refresh and fastest_refresh["result"]["refresh_seconds_50k"],
                fastest_refresh and f"batch {batch}, {fastest_refresh['precision']}", "s"),
        _target("part_over_at", "PART (s = 1) epoch incl. refresh / AT epoch, same setting", 1.10,
                part and part["result"]["seconds"] / at["result"]["seconds"], part and _setting(part), "×"),
        _target("wide_epoch", "WRN-34-10 PGD-10 AT epoch (bf16), 50 k 32×32 images", 45.0,
                fastest_wide and fastest_wide["result"]["epoch_seconds_50k"], fastest_wide and _setting(fastest_wide), "s"),
        _target("aa_10k", "standard AutoAttack on 10 k CIFAR-sized images (ResNet-18)", 600.0,
                aa_rate and AA_IMAGES_TARGET / aa_rate,
                aa_rate and f"{aa['result']['dataset']}, robust accuracy "
                            f"{aa['result']['per_batch_size'][0]['robust_accuracy']:.1f}%, "
                            f"batch {aa['result']['per_batch_size'][0]['batch_size']}", "s"),
    ]


def cost_basis(stages: dict[str, Any], sizes: Sizes) -> dict[str, Any] | None:
    """What ``cost_table.py`` scales to the grid: per model its fastest AT epoch at the recipe's batch and,
    as ratios to it, PART's training part, its refresh and TRADES / MART (eager, same precision)."""
    best = best_at(stages, sizes.batch_sizes[0]) if sizes is FULL else None
    if best is None or best[1] is None:
        return None
    at, part = best
    a, p = at["result"], part["result"]
    speed = _result(stages, "speed")["measurements"]

    def family(method: str) -> float | None:
        pair = [_ok(speed, method=m, batch_size=at["batch_size"], precision=at["precision"], compile="none")
                for m in ("at", method)]
        return pair[1][0]["result"]["seconds"] / pair[0][0]["result"]["seconds"] if all(pair) else None

    basis = {sizes.model: {"setting": _setting(at), "at_epoch_seconds_50k": a["epoch_seconds_50k"],
                           "part_train_over_at": (p["seconds"] - p["refresh_seconds"]) / a["seconds"],
                           "refresh_over_at": p["refresh_seconds"] / a["seconds"],
                           "trades_over_at": family("trades"), "mart_over_at": family("mart")}}
    wide = _result(stages, "wide")
    wides = _ok(wide["measurements"]) if wide else []
    if wides:
        w = min(wides, key=lambda r: r["result"]["epoch_seconds_50k"])
        basis[sizes.wide_model] = {"setting": _setting(w), "at_epoch_seconds_50k": w["result"]["epoch_seconds_50k"]}
    return basis


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"device check on {report['device']} ({report['device_name']}), {'tiny' if report['tiny'] else 'full'} "
             f"sizes, {report['wall_seconds']:.0f} s of a {report['budget_seconds']:.0f} s budget"]
    for name, stage in report["stages"].items():
        lines.append(f"  {name:<12} {stage['status']:<6} {stage['seconds']:6.1f} s"
                     + (f"  {stage['error']}" if stage["status"] == "error" else ""))
    smoke = _result(report["stages"], "smoke")
    if smoke:
        lines.append(f"smoke: {smoke['passed']}/{smoke['ran']} combinations passed, {smoke['skipped']} skipped")
        for r in smoke["combinations"]:
            if r["status"] == "error" or (r["status"] == "ok" and not r["result"]["passed"]):
                failed = r.get("error") or ", ".join(k for k, v in r["result"]["checks"].items() if not v)
                lines.append(f"  FAILED {r['method']} {r['precision']} compile {r['compile']}: {failed}")
    speed = _result(report["stages"], "speed")
    for r in _ok(speed["measurements"]) if speed else []:
        lines.append(f"  {r['method']:<6} {_setting(r):<38} {r['result']['images_per_second']:7.0f} img/s, "
                     f"{r['result']['epoch_seconds_50k']:7.1f} s per 50 k")
    lines.append("targets (H100/H200):")
    for t in report["targets"]:
        value = "" if t["value"] is None else f": {t['value']:.2f} {t['unit']} (limit {t['limit']} {t['unit']})"
        lines.append(f"  {t['status']:<12} {t['what']}{value}" + (f" [{t['setting']}]" if t["setting"] else ""))
    return lines


# ---------------------------------------------------------------------------------------------


def run_stages(ctx: Context, total: Budget, names: list[str]) -> dict[str, Any]:
    """Each stage guarded, with its share of the time still left (unused time passes on)."""
    stages = {}
    for i, name in enumerate(names):
        remaining = sum(STAGE_SHARES[n] for n in names[i:])
        seconds = max(total.left(), 0) * STAGE_SHARES[name] / remaining
        ctx.budget = Budget(seconds)
        stages[name] = {"budget_seconds": seconds, **guarded(STAGES[name], ctx)}
    return stages


@contextlib.contextmanager
def working_directory(out: Path, keep: bool):
    """Where the stages write their datasets and runs: a temporary directory, or ``out/work`` kept afterwards,
    so that what the JSON reports can be checked against the files it came from (tests/test_device_check.py)."""
    if keep:
        (out / "work").mkdir(parents=True, exist_ok=True)
        yield out / "work"
        return
    with tempfile.TemporaryDirectory(prefix="device_check.") as tmp:
        yield Path(tmp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="directory for device_check.json and summary.txt")
    p.add_argument("--device", default="auto")
    p.add_argument("--tiny", action="store_true", help="tiny sizes: proves the script in seconds, measures nothing")
    p.add_argument("--budget-seconds", type=float, default=450.0, help="the whole check's time (default 450)")
    p.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--keep", action="store_true",
                   help="keep the working files (datasets, runs, checkpoints) in OUT/work instead of deleting them")
    args = p.parse_args(argv)
    names = [s.strip() for s in args.stages.split(",") if s.strip()]
    if unknown := [s for s in names if s not in STAGES]:
        p.error(f"unknown stages {unknown}; expected some of {', '.join(STAGES)}")

    t0 = time.perf_counter()
    device = resolve_device(args.device, "--device")
    sizes = TINY if args.tiny else FULL
    torch._dynamo.config.recompile_limit = 64  # attack (eval) + step (train) graphs per run, several runs a mode
    env = provenance.environment()
    with working_directory(Path(args.out), args.keep) as tmp:
        stages = run_stages(Context(device, sizes, tmp), Budget(args.budget_seconds), names)
    report = {"format_version": FORMAT_VERSION, "command": [sys.argv[0], *(argv or sys.argv[1:])],
              "device": str(device), "device_name": env["device_name"], "tiny": args.tiny, "sizes": asdict(sizes),
              "budget_seconds": args.budget_seconds, "wall_seconds": time.perf_counter() - t0,
              "extrapolation": f"every epoch and refresh time is measured on a few batches after a warm-up epoch "
                               f"and scaled linearly to {EPOCH_IMAGES} images (*_50k); AutoAttack's images/s to "
                               f"{AA_IMAGES_TARGET} images",
              "stages": stages, "environment": env, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    report["targets"] = targets(stages, sizes)
    report["cost_basis"] = cost_basis(stages, sizes)
    summary = "\n".join(summary_lines(report)) + "\n"
    out = Path(args.out)
    files.write_json(out / "device_check.json", report)
    files.write_text(out / "summary.txt", summary)
    print(summary, end="")
    smoke = _result(stages, "smoke")
    failed = [n for n, s in stages.items() if s["status"] != "ok"]
    return 0 if not failed and (smoke is None or smoke["all_passed"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
