"""Training for every method of the paper, resumable at epoch granularity.

``train(cfg, out_dir)`` runs one (dataset, model, method, seed) to completion. After each epoch it
writes, atomically, ``checkpoint.pt`` (model, optimiser, epoch, ε-masks, RNG state, history) and
``log.jsonl`` (one line per epoch). Killing the process at any point and calling ``train`` again
with the same config resumes from the last checkpoint and, on the CPU, ends with bit-identical
weights: every random stream of an epoch (shuffle, crops, flips, attack starts) is seeded from
(seed, epoch, stream), so an epoch replays the same whether or not the process restarted.
``model.pt`` and ``run.json`` are written last; their presence marks a finished run.

Launched by torchrun, the same loop trains one run in several processes (one per GPU) with the results
of one process: see :mod:`part.distributed`. Only rank 0 writes files.

The loop stays on the device: no ``.item()`` per batch — losses and accuracies are accumulated as
tensors and read once per epoch, which is also when divergence (a non-finite loss) is detected.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from part import distributed, io
from part.attacks import RowsOf
from part.batchnorm import slice_batchnorm
from part.config import RunConfig, release_behaviours
from part.data import DeviceLoader, load_prepared, make_generator
from part.epsmap import EpsMapStore
from part.methods import outer_loss, training_attack
from part.models import build_model, load_weights

SHUFFLE_STREAM, ATTACK_STREAM = 1, 2
CHECKPOINT_KEYS = frozenset({"config", "epoch", "model", "optimizer", "masks", "rng", "history"})


class DivergenceError(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @property
    def checkpoint(self) -> Path:
        return self.root / "checkpoint.pt"

    @property
    def log(self) -> Path:
        return self.root / "log.jsonl"

    @property
    def model(self) -> Path:
        return self.root / "model.pt"

    @property
    def run(self) -> Path:
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def written(self) -> tuple[Path, ...]:
        """Every file the training loop writes into the run directory (atomically)."""
        return self.checkpoint, self.log, self.model, self.run, self.config


def read_log(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run's ``log.jsonl`` (one JSON object a line)."""
    path = RunPaths(Path(run_dir)).log
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no training log (log.jsonl is written after every epoch)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def autocast_factory(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A context factory: bf16 autocast on CUDA, nothing in fp32."""
    if precision == "bf16":
        if device.type != "cuda":
            raise ValueError(f"precision bf16 needs a CUDA device, got {device}")
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def build_for(cfg: RunConfig, num_classes: int, in_channels: int, device: torch.device) -> nn.Module:
    """The run's model, initialised from its seed alone (every method of a seed starts from the same
    weights), with the run's batch-norm slicing."""
    torch.manual_seed(cfg.seed)
    model = slice_batchnorm(build_model(cfg.model, num_classes, in_channels), cfg.batchnorm.slices).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _check_finished(paths: RunPaths, cfg: RunConfig) -> dict[str, Any] | None:
    if not (paths.run.is_file() and paths.model.is_file()):
        return None
    info = json.loads(paths.run.read_text())
    if info.get("config") != cfg.to_dict():
        raise RuntimeError(f"{paths.run}: this directory holds a finished run with a different config; "
                           "use another --out or delete it")
    return info


def train(cfg: RunConfig, out_dir: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume, or return the finished) run in ``out_dir``; returns the ``run.json`` content."""
    paths = RunPaths(Path(out_dir))
    writes = distributed.is_main()
    log = log if writes else (lambda _: None)
    if (done := _check_finished(paths, cfg)) is not None:
        log(f"[part] {paths.root}: already finished, nothing to do")
        return done
    if writes:
        if paths.root.exists() and not paths.root.is_dir():
            raise NotADirectoryError(f"{paths.root}: exists and is not a directory; expected a run directory "
                                     "(choose another --out)")
        for stale in io.sweep_temporaries(paths.root, [p.name for p in paths.written]):
            log(f"[part] removed {stale}, left by a writer that was killed mid-write")
        io.write_json(paths.config, cfg.to_dict())

    device = distributed.local_device(resolve_device(cfg.device))
    autocast = autocast_factory(cfg.precision, device)
    data = load_prepared(Path(cfg.data_dir) / f"{cfg.dataset}.pt")
    if cfg.mask.recipe == "official_jet" and data.image_shape[0] != 3:
        raise ValueError(f"{cfg.source}: key 'mask.recipe': official_jet gives one budget per RGB channel "
                         f"and needs 3-channel images; {cfg.dataset} has {data.image_shape[0]}")
    distributed.check_split(len(data.train), cfg.batch_size, cfg.source)
    if cfg.batchnorm.slices > 1 and distributed.world_size() > 1:
        raise ValueError(f"{cfg.source}: key 'batchnorm.slices': {cfg.batchnorm.slices} emulates nn.DataParallel "
                         "on one process; a multi-process run synchronises batch norm instead (expected 1)")
    model = distributed.synchronize_batchnorm(build_for(cfg, data.num_classes, data.image_shape[0], device), device)
    forward = _compiled(cfg, model)
    parallel = distributed.data_parallel(model, device)
    step = forward if parallel is model else _compiled(cfg, parallel)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                                weight_decay=cfg.optim.weight_decay)
    loader = DeviceLoader(data.train, cfg.batch_size, device, shuffle=True, crop_padding=cfg.augment.crop_padding,
                          flip=cfg.augment.flip, channels_last=cfg.channels_last, rank=distributed.rank(),
                          world_size=distributed.world_size())
    store = EpsMapStore(cfg)
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if paths.checkpoint.is_file():
        state = io.load_torch(paths.checkpoint, map_location=device)
        missing = sorted(CHECKPOINT_KEYS - set(state if isinstance(state, dict) else ()))
        if missing:
            raise ValueError(f"{paths.checkpoint}: not a checkpoint of this pipeline (missing {missing}); delete "
                             "it to restart the run from epoch 1")
        if state["config"] != cfg.to_dict():
            raise RuntimeError(f"{paths.checkpoint}: written by a different config; use another --out or delete it")
        load_weights(model, state["model"], str(paths.checkpoint))
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"].cpu())
        store.masks = state["masks"]
        history = list(state["history"])
        start_epoch = state["epoch"] + 1
        log(f"[part] resuming {paths.root} after epoch {start_epoch}/{cfg.epochs}")

    attack = training_attack(cfg.base_method, cfg.attack)
    outer = outer_loss(cfg)
    wall = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        record = run_epoch(cfg, epoch, model, optimizer, loader, store, attack, outer, autocast, forward, step)
        if not math.isfinite(record["loss"]):
            raise DivergenceError(f"{paths.root}: loss is {record['loss']} in epoch {epoch + 1}; the last good "
                                  f"checkpoint ({paths.checkpoint}) is kept. Lower optim.lr or check the data.")
        history.append(record)
        if writes:
            io.save_torch(paths.checkpoint, {
                "config": cfg.to_dict(), "epoch": epoch, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "masks": store.masks, "rng": torch.get_rng_state(),
                "history": history})
            io.write_text(paths.log, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))
        log(_progress_line(cfg, record))

    info = {"config": cfg.to_dict(), "release_behaviours": release_behaviours(cfg), "epochs_completed": cfg.epochs, "final": history[-1] if history else None,
            "wall_seconds_this_process": time.perf_counter() - wall,
            "train_seconds_total": sum(r["seconds"] for r in history), "processes": distributed.world_size(),
            "environment": io.environment()}
    if writes:
        io.save_torch(paths.model, model.state_dict())
        io.write_json(paths.run, info)
        paths.checkpoint.unlink(missing_ok=True)  # model.pt supersedes it; keeps finished runs small
    return info


def _compiled(cfg: RunConfig, module: nn.Module) -> nn.Module:
    return module if cfg.compile == "none" else torch.compile(module, mode=None if cfg.compile == "default" else cfg.compile)


def run_epoch(cfg: RunConfig, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer,
              loader: DeviceLoader, store: EpsMapStore, attack, outer, autocast,
              forward: nn.Module | None = None, step: nn.Module | None = None) -> dict[str, Any]:
    """One epoch: the ε-map refresh it is due, then the attack + outer-loss step for every batch.

    ``forward`` is the (possibly ``torch.compile``d) module the attack calls, ``step`` the one the outer
    loss calls (``forward`` itself, or wrapped in DistributedDataParallel in a multi-process run); the CAM
    refresh always runs the eager ``model``, since its forward hook must see the real activation.
    """
    forward = model if forward is None else forward
    step = forward if step is None else step
    device = loader.device
    t0 = time.perf_counter()
    lr = cfg.optim.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    refresh_seconds = 0.0
    if cfg.refreshes_at(epoch):
        t_refresh = time.perf_counter()
        store.refresh(model, loader, epoch, autocast)
        _synchronize(device)
        refresh_seconds = time.perf_counter() - t_refresh
    part_epoch = cfg.is_part_epoch(epoch)
    attack_gen = make_generator(device, cfg.seed, epoch, ATTACK_STREAM)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    full_share = torch.zeros((), device=device)
    n = 0
    step.train()
    for batch in loader.epoch(make_generator(device, cfg.seed, epoch, SHUFFLE_STREAM)):
        x_adv = None
        if attack is not None:
            eps = store.for_batch(batch) if part_epoch else cfg.attack.eps
            with autocast():
                x_adv = attack(forward, batch.x, batch.y, eps=eps,
                               generator=RowsOf(attack_gen, batch.rows, batch.global_size))
            if part_epoch:
                full_share += (eps == cfg.attack.eps).float().mean() * len(batch.y)
        with autocast():
            loss, logits = outer(step, batch.x, x_adv, batch.y, cfg.beta)
        optimizer.zero_grad(set_to_none=True)
        (loss * distributed.loss_weight(len(batch.y), batch.global_size)).backward()
        optimizer.step()
        loss_sum += loss.detach() * len(batch.y)
        correct += (logits.argmax(1) == batch.y).sum()
        n += len(batch.y)
    loss_sum, correct, full_share, n = distributed.sums(loss_sum, correct, full_share, n)  # over all processes
    _synchronize(device)
    seconds = time.perf_counter() - t0
    return {
        "epoch": epoch + 1, "phase": "part" if part_epoch else ("warmup" if cfg.pixel_reweighted else cfg.method),
        "lr": lr, "loss": loss_sum / n, "train_acc": 100.0 * correct / n,
        "full_eps_share": full_share / n if part_epoch else (1.0 if attack is not None else 0.0),
        "refreshed": refresh_seconds > 0, "refresh_seconds": refresh_seconds,
        "seconds": seconds, "images_per_second": n / seconds,
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _progress_line(cfg: RunConfig, r: dict[str, Any]) -> str:
    return (f"[part] {cfg.dataset}/{cfg.model}/{cfg.method}/seed{cfg.seed} epoch {r['epoch']:>3}/{cfg.epochs} "
            f"{r['phase']:<7} lr {r['lr']:.4g} loss {r['loss']:.4f} train-acc {r['train_acc']:6.2f}% "
            f"full-eps {100 * r['full_eps_share']:5.1f}% {r['seconds']:.1f}s ({r['images_per_second']:.0f} img/s)"
            + (f" refresh {r['refresh_seconds']:.2f}s" if r["refreshed"] else ""))
