"""Training for every method of the paper, resumable at epoch granularity.

``train(cfg, out_dir)`` runs one (dataset, model, method, seed) to completion. After each epoch it
writes, atomically, ``checkpoint.pt`` (model, optimiser, epoch, ε-masks, RNG state, history) and
``log.jsonl`` (one line per epoch). Killing the process at any point and calling ``train`` again
with the same config resumes from the last checkpoint and, on the CPU, ends with bit-identical
weights: every random stream of an epoch (shuffle, crops, flips, attack starts) is seeded from
(seed, epoch, stream), so an epoch replays the same whether or not the process restarted.
``model.pt`` and ``run.json`` are written last; their presence marks a finished run.

Two options the paper does not use (both off by default): robust validation on a held-out part of the
training set (``validation``: natural and PGD accuracy every few epochs in ``log.jsonl``, the best
epoch's weights kept as ``best.pt``), and an exponential moving average of the weights (``ema``, kept
as ``ema.pt``). Both are part of the checkpoint, so a resumed run still ends bit-identical.

Launched by torchrun, the same loop trains one run in several processes (one per GPU) with the results
of one process: see :mod:`part.training.distributed`. Only rank 0 writes files.

The loop stays on the device: no ``.item()`` per batch — losses and accuracies are accumulated as
tensors and read once per epoch, which is also when divergence (a non-finite loss) is detected.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from part.attacks.pgd import Attack, RowsOf
from part.attacks.suite import BATCH_SIZE, attack_specs, build_attack, correct_per_example, evaluation_budget
from part.base import files, lock, provenance, torchfiles
from part.base.config import ConfigError, RunConfig, release_behaviours
from part.base.errors import DivergenceError
from part.base.rundir import RunPaths
from part.base.runtime import autocast_factory, config_device, retain_freed_memory, synchronize
from part.data.prepared import (Batch, DeviceLoader, Split, hold_out, load_prepared, make_generator, prepared_file,
                                split_sha256)
from part.models import build_model, load_weights
from part.training import distributed
from part.training.batchnorm import slice_batchnorm
from part.training.epsmap import EpsMapStore
from part.training.methods import OuterLoss, outer_loss, training_attack
from part.training.optim import sgd

SHUFFLE_STREAM, ATTACK_STREAM, VALIDATION_STREAM = 1, 2, 4  # 3 is the held-out draw (part.data.prepared.HOLD_OUT_STREAM)
CHECKPOINT_KEYS = frozenset({"config", "epoch", "model", "optimizer", "masks", "rng", "history", "ema"})


def build_for(cfg: RunConfig, num_classes: int, in_channels: int, device: torch.device) -> nn.Module:
    """The run's model, initialised from its seed alone (every method of a seed starts from the same
    weights), with the run's batch-norm slicing."""
    torch.manual_seed(cfg.seed)
    model = slice_batchnorm(build_model(cfg.model, num_classes, in_channels, cfg.width), cfg.batchnorm.slices).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


@dataclass(frozen=True)
class Engine:
    """Everything an epoch uses besides its number, assembled once per run by :func:`build_engine`.

    ``model`` is the eager module (the CAM refresh hooks its real activations), ``forward`` the one the
    attack calls (``torch.compile``d when asked), ``step`` the one the outer loss calls (``forward``
    itself, or wrapped in DistributedDataParallel in a multi-process run).
    """
    cfg: RunConfig
    model: nn.Module
    forward: nn.Module
    step: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DeviceLoader
    store: EpsMapStore
    attack: Attack | None
    outer: OuterLoss
    autocast: Callable
    ema: AveragedModel | None = None

    @property
    def device(self) -> torch.device:
        return self.loader.device


def build_engine(cfg: RunConfig, split: Split, num_classes: int, device: torch.device) -> Engine:
    """The run's model, optimiser, loader over ``split``, ε-map store, attack and loss, for this process."""
    retain_freed_memory()
    model = distributed.synchronize_batchnorm(build_for(cfg, num_classes, split.images.shape[1], device), device)
    forward = _compiled(cfg, model)
    parallel = distributed.data_parallel(model, device)
    step = forward if parallel is model else _compiled(cfg, parallel)
    optimizer = sgd(model.parameters(), compiled=cfg.compile != "none", lr=cfg.optim.lr, momentum=cfg.optim.momentum,
                    weight_decay=cfg.optim.weight_decay)
    loader = DeviceLoader(split, cfg.batch_size, device, shuffle=True, crop_padding=cfg.augment.crop_padding,
                          flip=cfg.augment.flip, channels_last=cfg.channels_last, rank=distributed.rank(),
                          world_size=distributed.world_size())
    return Engine(cfg, model, forward, step, optimizer, loader, EpsMapStore(cfg),
                  training_attack(cfg.base_method, cfg.attack), outer_loss(cfg), autocast_factory(cfg.precision, device),
                  _averaged(cfg, model))


def _averaged(cfg: RunConfig, model: nn.Module) -> AveragedModel | None:
    """The EMA of ``model``'s weights, starting from its initial weights (``ema.decay`` > 0).

    Parameters are averaged; batch-norm running statistics are copied from the trained model after
    every step (``use_buffers=False``), as the PyTorch EMA code of the AT literature does (Gowal et al.
    2020 / Rebuffi et al. 2021 reproductions): averaging the statistics of different weights would
    describe none of them, and a recomputing pass over the data would cost an epoch.
    """
    if cfg.ema.decay == 0:
        return None
    ema = ExponentialAverage(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema.decay), use_buffers=False)
    AveragedModel.update_parameters(ema, model)  # the first update copies: the average starts at the initial weights
    return ema


class ExponentialAverage(AveragedModel):
    """``AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=False)`` whose updates
    after the first skip its two host reads of the step count (``n_averaged == 0``, ``n_averaged > 0``):
    a host↔device synchronisation each on CUDA, twice per batch. The operations are torch's own (one
    ``multi_avg_fn`` call per device and dtype, the buffers copied, the count incremented on the device),
    so the average and the checkpointed state are bit-identical to ``AveragedModel``'s.
    """

    def update_parameters(self, model: nn.Module) -> None:
        """One averaging step; the average must already hold a first copy (:func:`_averaged` makes it)."""
        groups: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for mine, theirs in zip(self.parameters(), model.parameters(), strict=True):
            averaged, current = groups.setdefault((mine.device, mine.dtype), ([], []))
            averaged.append(mine.detach())
            current.append(theirs.detach().to(mine.device))
        for averaged, current in groups.values():
            self.multi_avg_fn(averaged, current, self.n_averaged)  # the EMA's ignores the count
        for mine, theirs in zip(self.module.buffers(), model.buffers(), strict=True):
            mine.detach().copy_(theirs.detach().to(mine.device))
        self.n_averaged += 1


@dataclass(frozen=True)
class Validation:
    """The held-out split, resident on the device, and the cheap PGD it is attacked with."""
    split: Split
    attack: Attack
    record: dict[str, Any]

    def __call__(self, model: nn.Module, seed: int, epoch: int) -> dict[str, Any]:
        """Natural and robust accuracy (%) of ``model`` on the held-out split, and the seconds they took."""
        synchronize(self.split.labels.device)
        t0 = time.perf_counter()
        natural = correct_per_example(model, self.split)
        robust = correct_per_example(model, self.split, self.attack, batch_size=BATCH_SIZE,
                                     generator=make_generator(self.split.labels.device, seed, epoch, VALIDATION_STREAM))
        n = len(self.split)
        return {"val_natural": 100.0 * int(natural.sum()) / n, "val_robust": 100.0 * int(robust.sum()) / n,
                "val_seconds": time.perf_counter() - t0}


def split_for_training(cfg: RunConfig, train_split: Split, device: torch.device) -> tuple[Split, Validation | None]:
    """(the images the run trains on, its validation or None): ``validation.size`` images held out."""
    if cfg.validation.size == 0:
        return train_split, None
    try:
        rest, held = hold_out(train_split, cfg.validation.size, cfg.validation.seed)
    except ValueError as err:
        raise ConfigError(f"{cfg.source}: {err}") from None
    # PGD-20 of the evaluation with fewer steps; its starts come from the run's VALIDATION_STREAM, not a seed
    spec = {k: v for k, v in attack_specs(*evaluation_budget(cfg.dataset))["pgd20"].items() if k != "seed"}
    spec["steps"] = cfg.validation.steps
    record = {**dataclasses.asdict(cfg.validation), "train_images": len(rest), "held_out_sha256": split_sha256(held),
              "attack": spec}
    on_device = Split(held.images.to(device), held.labels.to(device))
    return rest, Validation(on_device, build_attack(spec), record)


def _compiled(cfg: RunConfig, module: nn.Module) -> nn.Module:
    return module if cfg.compile == "none" else torch.compile(module, mode=None if cfg.compile == "default" else cfg.compile)


def _check_finished(paths: RunPaths, cfg: RunConfig) -> dict[str, Any] | None:
    if not (paths.run.is_file() and paths.model.is_file()):
        return None
    info = files.read_json_object(paths.run, f"delete it and {paths.model.name} to train the run again")
    if info.get("config") != cfg.to_dict():
        raise ValueError(f"{paths.run}: this directory holds a finished run with a different config; "
                         "use another --out or delete it")
    return info


def train(cfg: RunConfig, out_dir: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume, or return the finished) run in ``out_dir``; returns the ``run.json`` content.

    The writing process holds the run directory's lock (:mod:`part.base.lock`) throughout, the check for a
    finished run included: a second writer is refused instead of resuming, or restarting, beside it.
    """
    paths = RunPaths(Path(out_dir))
    if not distributed.is_main():
        return _train(cfg, paths, lambda _: None)
    with lock.held(paths.lock, "part train"):
        return _train(cfg, paths, log)


def _train(cfg: RunConfig, paths: RunPaths, log: Callable[[str], None]) -> dict[str, Any]:
    writes = distributed.is_main()
    if (done := _check_finished(paths, cfg)) is not None:
        log(f"[part] {paths.root}: already finished, nothing to do")
        return done
    # Everything that may refuse the run before its first write: a refused run leaves its directory as it found it.
    data = load_prepared(prepared_file(cfg.data_dir, cfg.dataset, f"{cfg.source}: key 'data_dir'"))
    device = distributed.local_device(config_device(cfg))
    train_split, validation = split_for_training(cfg, data.train, device)
    _check_trainable(cfg, data.image_shape[0], len(train_split))
    if writes:
        _prepare_directory(paths, cfg, log)
    engine = build_engine(cfg, train_split, data.num_classes, device)
    history = _resume(paths, engine, log)

    wall = time.perf_counter()
    for epoch in range(len(history), cfg.epochs):
        record = run_epoch(engine, epoch)
        if not math.isfinite(record["loss"]):
            raise DivergenceError(f"{paths.root}: loss is {record['loss']} in epoch {epoch + 1}; the last good "
                                  f"checkpoint ({paths.checkpoint}) is kept. Lower optim.lr or check the data.")
        if validation is not None and cfg.validates_at(epoch):
            record.update(validation(engine.model, cfg.seed, epoch))
        best = best_epoch(history)
        improved = "val_robust" in record and (best is None or record["val_robust"] > best["val_robust"])
        history.append(record)
        if writes:
            if improved:  # before the checkpoint: a kill in between replays this epoch and rewrites it
                torchfiles.save_torch(paths.best, engine.model.state_dict())
            _save_checkpoint(paths, engine, epoch, history)
        log(_progress_line(cfg, record))

    info = {"config": cfg.to_dict(), "release_behaviours": release_behaviours(cfg), "epochs_completed": cfg.epochs,
            "final": history[-1] if history else None, "wall_seconds_this_process": time.perf_counter() - wall,
            "train_seconds_total": sum(r["seconds"] for r in history), "processes": distributed.world_size(),
            "validation": None if validation is None else validation.record, "best": best_epoch(history),
            "checkpoints": ["last", *(["best"] if validation else []), *(["ema"] if engine.ema else [])],
            "environment": provenance.environment()}
    if writes:
        if engine.ema is not None:
            torchfiles.save_torch(paths.ema, engine.ema.module.state_dict())
        torchfiles.save_torch(paths.model, engine.model.state_dict())
        files.write_json(paths.run, info)
        paths.checkpoint.unlink(missing_ok=True)  # model.pt supersedes it; keeps finished runs small
    return info


def best_epoch(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The validated epoch of highest robust accuracy (the first of equals): the one ``best.pt`` holds."""
    validated = [r for r in history if "val_robust" in r]
    if not validated:
        return None
    best = max(validated, key=lambda r: r["val_robust"])  # max keeps the first of equals, as the loop does
    return {key: best[key] for key in ("epoch", "val_robust", "val_natural")}


def _prepare_directory(paths: RunPaths, cfg: RunConfig, log: Callable[[str], None]) -> None:
    """The run directory, cleared of a killed writer's temporaries, with the config written first."""
    for stale in files.sweep_temporaries(paths.root, [p.name for p in paths.written]):
        log(f"[part] removed {stale}, left by a writer that was killed mid-write")
    files.write_json(paths.config, cfg.to_dict())


def _check_trainable(cfg: RunConfig, channels: int, n_images: int) -> None:
    """What only the data and the process count can rule out."""
    if cfg.mask.recipe == "official_jet" and channels != 3:
        raise ValueError(f"{cfg.source}: key 'mask.recipe': official_jet gives one budget per RGB channel "
                         f"and needs 3-channel images; {cfg.dataset} has {channels}")
    distributed.check_split(n_images, cfg.batch_size, cfg.source)
    if cfg.batchnorm.slices > 1 and distributed.world_size() > 1:
        raise ValueError(f"{cfg.source}: key 'batchnorm.slices': {cfg.batchnorm.slices} emulates nn.DataParallel "
                         "on one process; a multi-process run synchronises batch norm instead (expected 1)")


def _save_checkpoint(paths: RunPaths, engine: Engine, epoch: int, history: list[dict[str, Any]]) -> None:
    torchfiles.save_torch(paths.checkpoint, {
        "config": engine.cfg.to_dict(), "epoch": epoch, "model": engine.model.state_dict(),
        "optimizer": engine.optimizer.state_dict(), "masks": engine.store.masks, "rng": torch.get_rng_state(),
        "history": history, "ema": None if engine.ema is None else engine.ema.state_dict()})
    files.write_text(paths.log, "".join(json.dumps(r, sort_keys=True) + "\n" for r in history))


def _resume(paths: RunPaths, engine: Engine, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Load the run's checkpoint into ``engine`` if there is one; the epochs' records so far."""
    if not paths.checkpoint.is_file():
        return []
    state = torchfiles.load_torch(paths.checkpoint, map_location=engine.device)
    missing = sorted(CHECKPOINT_KEYS - set(state if isinstance(state, dict) else ()))
    if missing:
        raise ValueError(f"{paths.checkpoint}: not a checkpoint of this pipeline (missing {missing}); delete "
                         "it to restart the run from epoch 1")
    if state["config"] != engine.cfg.to_dict():
        raise ValueError(f"{paths.checkpoint}: written by a different config; use another --out or delete it")
    load_weights(engine.model, state["model"], str(paths.checkpoint))
    engine.optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"].cpu())
    engine.store.masks = state["masks"]
    if (engine.ema is None) != (state["ema"] is None):
        raise ValueError(f"{paths.checkpoint}: its weight average does not match key 'ema.decay' of the config")
    if engine.ema is not None:
        engine.ema.load_state_dict(state["ema"])
    log(f"[part] resuming {paths.root} after epoch {state['epoch'] + 1}/{engine.cfg.epochs}")
    return list(state["history"])


def run_epoch(engine: Engine, epoch: int) -> dict[str, Any]:
    """One epoch as the paper states it: refresh the ε-maps if due; then per batch, budget → attack →
    outer loss → step."""
    cfg = engine.cfg
    t0 = time.perf_counter()
    lr = _set_lr(engine.optimizer, cfg.optim.lr_at(epoch))
    refresh_seconds = _refresh_if_due(engine, epoch)
    part_epoch = cfg.is_part_epoch(epoch)
    attack_gen = make_generator(engine.device, cfg.seed, epoch, ATTACK_STREAM)
    totals = _Totals(engine.device)
    engine.step.train()
    for batch in engine.loader.epoch(make_generator(engine.device, cfg.seed, epoch, SHUFFLE_STREAM)):
        eps = engine.store.for_batch(batch) if part_epoch else cfg.attack.eps
        x_adv = _adversarial(engine, batch, eps, attack_gen)
        with engine.autocast():
            loss, logits = engine.outer(engine.step, batch.x, x_adv, batch.y, cfg.beta)
        _descend(engine.optimizer, loss, batch)
        if engine.ema is not None:
            engine.ema.update_parameters(engine.model)
        totals.add(loss, logits, batch, eps, cfg.attack.eps if part_epoch else None)
    loss, train_acc, full_share, n = totals.over_processes()
    synchronize(engine.device)
    seconds = time.perf_counter() - t0
    return {
        "epoch": epoch + 1, "phase": "part" if part_epoch else ("warmup" if cfg.pixel_reweighted else cfg.method),
        "lr": lr, "loss": loss, "train_acc": train_acc,
        "full_eps_share": full_share if part_epoch else (1.0 if engine.attack is not None else 0.0),
        "refreshed": refresh_seconds > 0, "refresh_seconds": refresh_seconds,
        "seconds": seconds, "images_per_second": n / seconds,
    }


def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> float:
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def _refresh_if_due(engine: Engine, epoch: int) -> float:
    """Recompute the ε-maps when the schedule says so (with the eager model); the seconds it took."""
    if not engine.cfg.refreshes_at(epoch):
        return 0.0
    t0 = time.perf_counter()
    engine.store.refresh(engine.model, engine.loader, epoch, engine.autocast)
    synchronize(engine.device)
    return time.perf_counter() - t0


def _adversarial(engine: Engine, batch: Batch, eps: float | torch.Tensor,
                 generator: torch.Generator) -> torch.Tensor | None:
    """The batch's training AEs under budget ``eps`` (None for natural training); random starts drawn from
    this process's rows of the global batch, so any process count draws the same starts."""
    if engine.attack is None:
        return None
    with engine.autocast():
        return engine.attack(engine.forward, batch.x, batch.y, eps=eps,
                             generator=RowsOf(generator, batch.rows, batch.global_size))


def _descend(optimizer: torch.optim.Optimizer, loss: torch.Tensor, batch: Batch) -> None:
    """One SGD step; the loss is weighted by this process's share of the global batch (1 on one process),
    so the gradients DDP averages are the global batch's mean."""
    optimizer.zero_grad(set_to_none=True)
    weight = distributed.loss_weight(len(batch.y), batch.global_size)
    (loss if weight == 1 else loss * weight).backward()  # × 1 would add an operation and change no bit
    optimizer.step()


class _Totals:
    """An epoch's sums, kept on the device (no host round trip per batch) and read once at its end."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.full_share = torch.zeros((), device=device)
        self.n = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, batch: Batch, eps: float | torch.Tensor,
            full: float | None) -> None:
        """``full``: the full budget ε when the batch was attacked under an ε-map, whose share at ε is counted."""
        self.loss += loss.detach() * len(batch.y)
        self.correct += (logits.argmax(1) == batch.y).sum()
        if full is not None:
            self.full_share += (eps == full).float().mean() * len(batch.y)
        self.n += len(batch.y)

    def over_processes(self) -> tuple[float, float, float, int]:
        """(mean loss, accuracy %, share of budget entries at full ε, images), summed over all processes."""
        loss, correct, full_share, n = distributed.sums(self.loss, self.correct, self.full_share, self.n)
        return loss / n, 100.0 * correct / n, full_share / n, n


def _progress_line(cfg: RunConfig, r: dict[str, Any]) -> str:
    return (f"[part] {cfg.dataset}/{cfg.model}/{cfg.method}/seed{cfg.seed} epoch {r['epoch']:>3}/{cfg.epochs} "
            f"{r['phase']:<7} lr {r['lr']:.4g} loss {r['loss']:.4f} train-acc {r['train_acc']:6.2f}% "
            f"full-eps {100 * r['full_eps_share']:5.1f}% {r['seconds']:.1f}s ({r['images_per_second']:.0f} img/s)"
            + (f" refresh {r['refresh_seconds']:.2f}s" if r["refreshed"] else "")
            + (f" | val nat {r['val_natural']:6.2f}% rob {r['val_robust']:6.2f}% {r['val_seconds']:.1f}s"
               if "val_robust" in r else ""))
