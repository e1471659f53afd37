"""Robustness evaluation of trained runs: natural, PGD-20, MMA (the release's and Gao et al.'s MM3),
standard AutoAttack and the release's weaker AutoAttack (``aa_release``), each kept per example so that any set of attacks can be merged later.

Each attack of a run is its own unit of work, because AutoAttack costs far more than the rest and a
workflow runs one job per (model, attack). A job writes only its own pair of files in the run
directory (``part.evaluation.results``: ``eval/<attack>.json`` + ``eval/<attack>.correct.npz``), so jobs on
different attacks of one model never touch the same file; a merge then writes ``metrics.json``.

The settings are data (``part.attacks.suite.attack_specs``), built from the dataset's evaluation budget, and are
written into the results as they were run, so a number can always be traced to its attack.
Evaluation is deterministic: random starts draw from seeded generators, AutoAttack's own reseeding
is isolated (``part.attacks.autoattack_adapter``). The table's MMA column is ``mma``, the variant of the
PART release (``part.attacks.pgd.MMA``); ``mm3`` is Gao et al.'s published attack, offered beside it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from part.attacks.autoattack_adapter import EvaluationWarning, StandardAutoAttack
from part.attacks.suite import BATCH_SIZE, attack_specs, batched_correct, build_attack, check_inputs, evaluation_budget
from part.base import files, lock, provenance, torchfiles
from part.base.config import RunConfig, from_dict
from part.base.grid import KEEPS
from part.base.rundir import RunPaths
from part.base.runtime import autocast_factory, config_device, eval_mode, resolve_device, synchronize
from part.base.vocabulary import CHECKS, EVALUATIONS, TABLE_ATTACKS
from part.data.prepared import load_prepared, prepared_file
from part.evaluation import curve, results, sanity
from part.models import build_model, load_weights


class _Autocast(nn.Module):
    """bf16 forward passes with fp32 logits out, so every attack (AutoAttack too) sees one precision."""

    def __init__(self, model: nn.Module, autocast: Callable[[], contextlib.AbstractContextManager]):
        super().__init__()
        self.model, self.autocast = model, autocast

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.model(x).float()


def with_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """``model`` itself for fp32; for bf16 (CUDA only) a wrapper that autocasts and returns fp32 logits."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r}: expected 'fp32' or 'bf16'")
    return model if precision == "fp32" else _Autocast(model, autocast_factory(precision, device)).eval()


def _warn(msg: str) -> None:
    warnings.warn(msg, EvaluationWarning, stacklevel=3)


def _check_outputs(logits: torch.Tensor) -> None:
    """fra31's check: rows in [0, 1] summing to 1 are probabilities, whose gradients saturate."""
    if logits.min() > -1e-5 and logits.max() < 1 + 1e-5 and bool(((logits.sum(1) - 1).abs() < 1e-4).all()):
        _warn("the model's outputs look like probabilities (rows in [0, 1] summing to 1); the attacks need "
              "logits, and their gradients through a softmax saturate: remove the final softmax")


def check_accuracies(name: str, natural: torch.Tensor, robust: torch.Tensor, num_classes: int) -> None:
    """Warn when the numbers themselves say the evaluation is broken.

    Natural accuracy within 3 standard errors of chance means a wrong checkpoint, labels or input
    scaling; an attack that leaves *more* points correct than no attack at all is not attacking.
    """
    n = len(natural)
    chance = 1.0 / num_classes
    nat = natural.float().mean().item()
    if nat <= chance + 3 * math.sqrt(chance * (1 - chance) / n):
        _warn(f"natural accuracy {100 * nat:.2f}% on {n} examples is at chance level ({100 * chance:.1f}% for "
              f"{num_classes} classes): wrong checkpoint, labels or input scaling?")
    if name != "natural" and int(robust.sum()) > int(natural.sum()):
        _warn(f"{name}: robust accuracy {100 * robust.float().mean().item():.2f}% is above natural accuracy "
              f"{100 * nat:.2f}%: the attack turned misclassified points into correct ones; it is not "
              "maximising the loss (wrong sign, masked gradients or a randomised model)")


@dataclass(frozen=True)
class AttackResult:
    name: str
    correct: torch.Tensor  # bool (N,), on the CPU
    natural_correct: torch.Tensor  # bool (N,), on the CPU: the same examples without attack
    settings: dict[str, Any]
    seconds: float

    @property
    def accuracy(self) -> float:
        return 100.0 * int(self.correct.sum()) / len(self.correct)

    @property
    def natural_accuracy(self) -> float:
        return 100.0 * int(self.natural_correct.sum()) / len(self.natural_correct)


def run_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, name: str, spec: dict[str, Any], *,
               batch_size: int = BATCH_SIZE, log: Callable[[str], None] | None = print) -> AttackResult:
    """Per-example correctness of ``model`` on float images ``x`` in [0, 1] (on the model's device)
    under the attack ``spec`` (one of ``attack_specs``), with the sanity checks of fra31.

    The model is put in eval mode for the evaluation (a warning says so if it was not) and left as
    it was found. ``seconds`` times the attack alone, after a device synchronisation.
    """
    device = x.device
    check_inputs(x)
    if model.training:
        _warn("the model is in train mode (batch-norm would use batch statistics); evaluating it in eval mode")
    with eval_mode(model):
        with torch.no_grad():
            logits = model(x[:batch_size]).float()
        _check_outputs(logits)
        natural = batched_correct(model, x, y, None, batch_size, None)
        synchronize(device)
        t0 = time.perf_counter()
        if spec["kind"] == "autoattack":
            adapter = StandardAutoAttack(model, spec["eps"], device=device, seed=spec["seed"], batch_size=batch_size,
                                         log=log)
            settings = {**spec, **adapter.settings}
            correct = batched_correct(model, adapter.perturb(x, y), y, None, batch_size, None)
        else:
            attack = build_attack(spec)
            settings = {**spec, **(attack.settings(model) if attack is not None else {})}
            generator = torch.Generator(device=device).manual_seed(spec["seed"]) if "seed" in spec else None
            correct = batched_correct(model, x, y, attack, batch_size, generator)
        synchronize(device)
        seconds = time.perf_counter() - t0
    check_accuracies(name, natural, correct, logits.shape[1])
    return AttackResult(name, correct.cpu(), natural.cpu(), settings, seconds)


# ---------------------------------------------------------------------------------------------
# Run directories: one job per attack, then a merge


@dataclass(frozen=True)
class LoadedRun:
    """A finished run ready to attack: its model (eval mode) and test images, both on the device."""

    paths: RunPaths
    cfg: RunConfig
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    index: np.ndarray
    checkpoint: str
    checkpoint_sha256: str
    precision: str

    def first(self, n: int | None) -> LoadedRun:
        """The same run on its first ``n`` test images (all for None): one load serves attacks of any size."""
        if n is None or n >= len(self.index):
            return self
        return dataclasses.replace(self, x=self.x[:n], y=self.y[:n], index=self.index[:n])


def _run_info(cfg: RunConfig) -> dict[str, Any]:
    return {"dataset": cfg.dataset, "model": cfg.model, "method": cfg.method, "seed": cfg.seed}


def load_run(run_dir: str | Path, *, n_examples: int | None = None, device: str | None = None,
             precision: str = "fp32", data_dir: str | Path | None = None, checkpoint: str = "last") -> LoadedRun:
    """A finished run's ``checkpoint`` weights (``last``: model.pt; ``best``, ``ema``: see part.base.rundir) and
    the first ``n_examples`` test images (all by default), on the device."""
    paths = RunPaths(Path(run_dir))
    weights = paths.weights(checkpoint)
    for required in (paths.config, paths.model):
        if not required.is_file():
            raise FileNotFoundError(f"{required}: missing; {paths.root} is not a finished run (train it first)")
    cfg = from_dict(files.read_json_object(paths.config, "train the run again"), str(paths.config))
    if not weights.is_file():
        raise FileNotFoundError(_missing_weights(weights, checkpoint, cfg, paths))
    dev = resolve_device(device, "--device") if device is not None else config_device(cfg)
    where = "--data-dir" if data_dir else f"{paths.config}: key 'data_dir'"
    data = load_prepared(prepared_file(data_dir or cfg.data_dir, cfg.dataset, where))
    n_test = len(data.test)
    n = n_test if n_examples is None else n_examples
    if not 1 <= n <= n_test:
        raise ValueError(f"--n-examples {n_examples}: the {cfg.dataset} test split has {n_test} examples")
    model = build_model(cfg.model, data.num_classes, data.image_shape[0], cfg.width)
    load_weights(model, torchfiles.load_torch(weights, map_location="cpu"), str(weights))
    model = with_precision(model.to(dev).eval(), precision, dev)
    x = data.test.images[:n].to(dev).float().div_(255)
    return LoadedRun(paths, cfg, model, x, data.test.labels[:n].to(dev), np.arange(n, dtype=np.int64),
                     checkpoint, results.file_sha256(weights), precision)


def _missing_weights(weights: Path, checkpoint: str, cfg: RunConfig, paths: RunPaths) -> str:
    """Why a finished run lacks the weights of ``checkpoint``: trained without them, or they were removed since."""
    setting, kept = KEEPS[checkpoint]
    if kept(cfg):
        return (f"{weights}: missing, though the run keeps its {checkpoint} weights (key '{setting}' > 0 in "
                f"{paths.config}): the file was removed after training; train the run again into a new directory")
    value = functools.reduce(getattr, setting.split("."), cfg)
    return (f"{weights}: missing; the run was trained without its {checkpoint} weights (key '{setting}' is {value} "
            f"in {paths.config}; expected > 0)")


def _evaluate_one(run: LoadedRun, name: str, spec: dict[str, Any], batch_size: int,
                  log: Callable[[str], None] | None) -> dict[str, Any]:
    result = run_attack(run.model, run.x, run.y, name, spec, batch_size=batch_size, log=log)
    n = len(run.index)
    entry = results.write_result(run.paths.root, name, {
        "attack": name, "accuracy": result.accuracy, "n_correct": int(result.correct.sum()),
        "natural_accuracy": result.natural_accuracy, "seconds": result.seconds,
        "images_per_second": n / result.seconds if result.seconds > 0 else None,
        "settings": result.settings, **_result_fields(run, n, batch_size),
    }, result.correct.numpy(), run.index, run.checkpoint)
    if log is not None:
        c = run.cfg
        what = "accuracy" if name == "natural" else f"robust accuracy {entry['accuracy']:6.2f}% ({entry['n_correct']}/{n}), natural"
        weights = "" if run.checkpoint == "last" else f" ({run.checkpoint} weights)"
        log(f"[part] {c.dataset}/{c.model}/{c.method}/seed{c.seed}{weights} {name}: {what} {entry['natural_accuracy']:6.2f}% "
            f"({n} examples) {result.seconds:.1f}s ({entry['images_per_second'] or float('inf'):.0f} img/s)")
    return entry


def _examples_per_attack(n_examples: int | None | Mapping[str, int | None],
                         attacks: list[str]) -> dict[str, int | None]:
    if isinstance(n_examples, Mapping):
        return {name: n_examples.get(name) for name in attacks}
    return dict.fromkeys(attacks, n_examples)


def _result_fields(run: LoadedRun, n: int, batch_size: int) -> dict[str, Any]:
    """The fields every evaluation result records besides its numbers (an attack's, a check's)."""
    return {"n_examples": n, "precision": run.precision, "batch_size": batch_size, "device": str(run.x.device),
            "split": "test", "subset": f"first {n} of {run.cfg.dataset} test", "run": _run_info(run.cfg),
            "checkpoint_sha256": run.checkpoint_sha256, "created": results.now(),
            "environment": provenance.environment()}


def _evaluate_check(run: LoadedRun, name: str, params: dict[str, Any] | None, n_default: int | None, seed: int,
                    batch_size: int, data_dir: str | Path | None, log: Callable[[str], None] | None) -> dict[str, Any]:
    """One evaluation check (``curve``, ``sanity``) of ``part.base.vocabulary.CHECKS``: its own module computes it,
    on the first ``params["n_examples"]`` examples (else ``n_default``, else all loaded), and it is written
    like an attack's result (``eval/<name>.json`` + ``.correct.npz``, ``correct`` of shape (rows, N))."""
    module = curve if name == "curve" else sanity
    spec = (curve.curve_spec if name == "curve" else sanity.sanity_spec)(run.cfg.dataset, params, seed)
    n = spec["n_examples"] or n_default or len(run.index)
    if n > len(run.index):
        raise ValueError(f"{name}: n_examples {n}, but only {len(run.index)} test examples were loaded")
    run = run.first(n)
    x, y, index = run.x, run.y, run.index
    if name == "curve":
        result = curve.run_curve(run.model, x, y, spec, batch_size=batch_size, log=log)
        arrays = {"eps_255": result.eps_255}
    else:
        source = _transfer_source(run, spec, n, data_dir)
        result = sanity.run_sanity(run.model, x, y, spec, source_model=source.model if source else None,
                                   batch_size=batch_size, log=log)
        if source is not None:
            result.settings["attacks"]["transfer"]["source_run"] = {
                **_run_info(source.cfg), "dir": str(source.paths.root), "checkpoint": source.checkpoint,
                "checkpoint_sha256": source.checkpoint_sha256}
        arrays = {"rows": np.array(result.rows)}
    entry = {"evaluation": name, "settings": result.settings, **_result_fields(run, n, batch_size),
             **module.entry_fields(result)}
    entry["images_per_second"] = n / entry["seconds"] if entry["seconds"] > 0 else None
    entry = results.write_result(run.paths.root, name, entry, result.correct, index, run.checkpoint, arrays)
    if log is not None:
        c = run.cfg
        what = (", ".join(f"{e:g}: {a:.1f}%" for e, a in zip(entry["eps_255"], entry["accuracy"])) if name == "curve"
                else ", ".join(f"{k} {v['status']}" for k, v in entry["checks"].items()))
        log(f"[part] {c.dataset}/{c.model}/{c.method}/seed{c.seed} {name} ({n} examples, {entry['seconds']:.1f}s): "
            f"{what}")
    return entry


def _transfer_source(run: LoadedRun, spec: dict[str, Any], n: int, data_dir: str | Path | None) -> LoadedRun | None:
    """The sanity check's source model (``transfer_from``): another run of the same dataset, on the same examples."""
    where = spec["attacks"]["transfer"]["source"]
    if where is None:
        return None
    if Path(where).resolve() == run.paths.root.resolve():
        raise ValueError(f"sanity: transfer_from {where} is the evaluated run itself; give another seed's run")
    source = load_run(where, n_examples=n, device=str(run.x.device), precision=run.precision, data_dir=data_dir,
                      checkpoint=run.checkpoint)
    if source.cfg.dataset != run.cfg.dataset or not torch.equal(source.y, run.y[:n]):
        raise ValueError(f"sanity: transfer_from {where} is a run of {source.cfg.dataset}, not of the evaluated "
                         f"run's {run.cfg.dataset} test examples")
    return source


def evaluate(run_dir: str | Path, attacks: Iterable[str] = TABLE_ATTACKS, *,
             n_examples: int | None | Mapping[str, int | None] = None,
             batch_size: int | None = None, device: str | None = None, precision: str = "fp32", seed: int = 0,
             data_dir: str | Path | None = None, merge: bool = True, checkpoint: str = "last",
             log: Callable[[str], None] | None = print, curve: dict[str, Any] | None = None,
             sanity: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a finished run under ``attacks`` and return the metrics (``metrics.json``'s content).

    Each attack writes ``eval/<attack>.json`` and ``eval/<attack>.correct.npz`` as soon as it is done;
    with ``merge`` (default) all evaluated attacks of the run, including earlier jobs', are then merged
    into ``metrics.json``. Without it nothing else is written and the metrics of this call's attacks
    are returned — the shape for one job per attack followed by a ``merge_metrics`` job.
    ``n_examples`` is one size for every attack or a size per attack (AutoAttack on a subset: the model and
    the largest set are loaded once, each attack takes the first images it needs; None: the whole test split).
    ``device`` defaults to the run's; ``precision`` ``bf16`` (CUDA only) is recorded with each result;
    ``batch_size`` None is :data:`part.attacks.suite.BATCH_SIZE`. ``checkpoint`` names the weights (``last``, the paper's, or
    ``best`` / ``ema`` where the run kept them), whose results go to ``eval_<name>/`` and ``metrics_<name>.json``.
    While it runs it holds the lock of each of its attacks' results (``part.base.lock``): a second evaluation of one
    of them is refused.

    ``attacks`` may also name the checks of ``part.base.vocabulary.CHECKS``: ``curve`` (``part.evaluation.curve``) and ``sanity``
    (``part.evaluation.sanity``), with their parameters as plain dicts (``curve``, ``sanity``: the workflow's
    ``evaluation.robustness_curve`` / ``evaluation.sanity`` blocks; their ``n_examples``, else ``n_examples``).
    They write ``eval/<name>.json`` + ``.correct.npz`` and are never merged; the result holds them under
    ``"checks"`` (alone when no attack was asked for).
    """
    batch_size = BATCH_SIZE if batch_size is None else batch_size
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size} (--batch-size, evaluation.batch_size): expected at least 1 image")
    attacks = list(dict.fromkeys(attacks))
    unknown = [a for a in attacks if a not in EVALUATIONS]
    if unknown or not attacks:
        raise ValueError(f"attacks {unknown or attacks}: expected a non-empty list from {', '.join(EVALUATIONS)}")
    checks = [a for a in attacks if a in CHECKS]
    attacks = [a for a in attacks if a not in CHECKS]
    params = {"curve": curve, "sanity": sanity}
    sizes = _examples_per_attack(n_examples, attacks + checks)
    sizes.update({name: (params[name] or {}).get("n_examples") or sizes[name] for name in checks})
    run = load_run(run_dir, n_examples=None if None in sizes.values() else max(sizes.values()), device=device,
                   precision=precision, data_dir=data_dir, checkpoint=checkpoint)
    specs = attack_specs(*evaluation_budget(run.cfg.dataset), seed=seed)
    with contextlib.ExitStack() as held:
        for name in attacks + checks:  # one writer per attack's files; another attack's job may run beside this one
            held.enter_context(lock.held(run.paths.eval_lock(checkpoint, name),
                                         f"part evaluate of {name} ({checkpoint} weights)"))
        entries = {name: _evaluate_one(run.first(sizes[name]), name, specs[name], batch_size, log) for name in attacks}
        done = {name: _evaluate_check(run, name, params[name], sizes[name], seed, batch_size, data_dir, log)
                for name in checks}
        if not attacks:
            return {"checks": done}
        metrics = (results.merge_metrics(run_dir, checkpoint) if merge
                   else results.build_metrics(run_dir, entries, checkpoint))
        return {**metrics, "checks": done} if done else metrics
