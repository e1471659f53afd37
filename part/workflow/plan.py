"""A grid's cost before it is submitted: jobs and device-hours per dataset and stage (``part plan``).

Every GPU job of the workflow is one run's training or one evaluation job (an attack with the tables'
weights; natural + PGD-20 with each compared checkpoint's). Each job is costed from the best
measurement there is, in this order, and every number says where it came from:

1. the run's own files, where the grid has already (partly) run: the epochs of ``log.jsonl``, the
   epochs still to come at the mean of the measured ones; ``eval*/<attack>.json``'s ``seconds``;
2. a throughput file measured on the user's hardware, the first given that covers the job:
   ``benchmarks/device_check.py``'s JSON (its ``cost_basis`` and AutoAttack rate),
   ``benchmarks/train_throughput.py``'s or ``benchmarks/eval_throughput.py``'s;
3. within a row, the mean of its costed jobs for the jobs nothing measured;
4. a row nothing measured: the shipped estimate (``part/reference/rates.json``: the H100 timings of the
   project's notes), labelled as such; a row it has no rate for (a model or attack it does not know) has no
   number, and says which rate is missing.

Training is scaled from the measured setting by training images and input pixels, evaluation by test
images (``evaluation.n_examples`` / ``aa_n_examples``) and pixels. A training measurement made with
another number of attack steps than a run's is rescaled, with a warning, by (steps + 1) forward + backward
passes per image (the attack's steps and the training step): exact for an AT epoch, so better than refusing
a valid measurement. A file measured on images of another number of channels is refused (the first layers,
a large share of a small model's cost, see them); one of another number of classes is used unscaled, with a
warning (only the last layer sees them, and the attacks' targets are a fixed number: AutoAttack's 9, MMA's 3). A throughput file times one device,
so its seconds are device-seconds however many GPUs a job asks for (perfect scaling assumed); a run's own
log times the job's wall clock, so it counts ``max(gpu, 1)`` GPUs (a CPU job counts as one device).
Attack timings are the attacks alone: job start-up, model loading and the natural pass each job makes
before its attack are not in them.

Every number is hours of the device that measured it: each throughput file records its device, a run's
own files measured the device its job ran on (the CPU where the job asks for no GPU or the run for
``device: cpu``). The table's unit says which: ``GPU-h``, ``CPU-h``, or ``device-h`` with each row's
device named where GPU and CPU measurements are mixed; the legend names each file's device.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from part.base import vocabulary
from part.base.config import RunConfig, deep_merge
from part.base.grid import Grid, Run, job_resources
from part.base.rundir import RunPaths, eval_dir_name, read_log
from part.base.vocabulary import SHAPES

TRAIN_IMAGES = {"cifar10": 50_000, "svhn": 73_257, "tinyimagenet200": 100_000, "fashion_mnist": 60_000,
                "digits": 1_437}
"""Training-set sizes of the datasets (the prepared files hold exactly these)."""
TEST_IMAGES = {"cifar10": 10_000, "svhn": 26_032, "tinyimagenet200": 10_000, "fashion_mnist": 10_000, "digits": 360}
"""Test-set sizes: what an evaluation job attacks unless ``evaluation.n_examples`` says fewer."""
BASIS_IMAGES, BASIS_SIDE = 50_000, 32
"""The epoch every training measurement is scaled to: 50 k images of 32×32 (CIFAR-10's)."""
ASSUMED_FAMILY_RATIO = 1.1
"""A TRADES / MART epoch over an AT epoch where nothing measured it."""
RATIO_MODEL = "resnet18"
"""The model whose PART / TRADES / MART ratios a device check measures (and applies to every model)."""
RUNS = "runs"
"""The source key of the grid's own measurements."""
NO_MEASUREMENT = "no measurement"


@dataclass(frozen=True)
class Basis:
    """Seconds of one 50 k-image 32×32 AT epoch per model with ``steps`` attack steps, and the per-epoch
    ratios to it."""
    at_epoch: dict[str, float]
    settings: dict[str, str]
    part_train: float
    refresh: float
    family: dict[str, float]
    steps: int

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Basis:
        """The basis of a ``benchmarks/device_check.py`` report (its ``cost_basis``)."""
        basis = report.get("cost_basis")
        if not basis or RATIO_MODEL not in basis:
            why = "it was written with --tiny" if report.get("tiny") else "its speed stage measured no AT + PART pair"
            raise ValueError(f"the device check has no cost basis ({why}); run it on a GPU without --tiny")
        ratios = basis[RATIO_MODEL]
        try:
            steps = report["stages"]["speed"]["result"]["attack_steps"]
        except (KeyError, TypeError):
            raise KeyError("stages.speed.result.attack_steps") from None
        return cls({m: b["at_epoch_seconds_50k"] for m, b in basis.items()}, {m: b["setting"] for m, b in basis.items()},
                   ratios["part_train_over_at"], ratios["refresh_over_at"], _families(ratios), steps)

    @classmethod
    def from_train_throughput(cls, report: dict[str, Any]) -> Basis:
        """The basis of ``benchmarks/train_throughput.py``'s JSON: its AT and PART (s = 1) epochs of ``n``
        images of ``size``², scaled to 50 k 32×32 images; TRADES / MART at the assumed ratio."""
        args, at = report["args"], report["at_epoch_seconds"]
        scale = BASIS_IMAGES / args["n"] * (BASIS_SIDE / args["size"]) ** 2
        setting = f"batch {args['batch_size']}, {args['precision']}, compile {args['compile']}"
        return cls({args["model"]: at * scale}, {args["model"]: setting},
                   (report["part_epoch_seconds"] - report["refresh_seconds"]) / at, report["refresh_seconds"] / at,
                   _families({}), args["steps"])

    @classmethod
    def from_shipped(cls, train: dict[str, Any]) -> Basis:
        """The basis of the shipped rates' ``train`` block (its refresh as a ratio to ResNet-18's AT epoch)."""
        at = train["at_epoch_seconds_50k"]
        return cls(dict(at), {m: train["setting"] for m in at}, train["part_train_over_at"],
                   train["refresh_seconds_50k"] / at[RATIO_MODEL], _families({}), train["attack_steps"])


def _families(ratios: dict[str, Any]) -> dict[str, float]:
    """Each base method's epoch over an AT epoch: measured where ``ratios`` has it, else assumed."""
    return {"at": 1.0, "natural": 1.0,
            **{f: ratios.get(f"{f}_over_at") or ASSUMED_FAMILY_RATIO for f in ("trades", "mart")}}


def steps_factor(measured: int, steps: int) -> float:
    """An AT epoch with ``steps`` attack steps over one with ``measured``: each image costs the attack's
    forward + backward passes and the training step's."""
    return (steps + 1) / (measured + 1)


def run_seconds(cfg: RunConfig, basis: Basis) -> float:
    """Device-seconds of one training run (natural training is costed as AT: an upper bound); the epochs at
    the run's attack steps, the refreshes (no attack in them) as measured."""
    if cfg.model not in basis.at_epoch:
        raise ValueError(f"no measured epoch for model {cfg.model!r} (the device check measured {sorted(basis.at_epoch)})")
    side = SHAPES[cfg.dataset][1]
    epoch = basis.at_epoch[cfg.model] * TRAIN_IMAGES[cfg.dataset] / BASIS_IMAGES * (side / BASIS_SIDE) ** 2
    base = epoch * basis.family[cfg.base_method] * steps_factor(basis.steps, cfg.attack.steps)
    part_epochs = sum(cfg.is_part_epoch(e) for e in range(cfg.epochs))
    refreshes = (0 if cfg.mask.recipe in vocabulary.QUADRANT_RECIPES
                 else sum(cfg.refreshes_at(e) for e in range(cfg.epochs)))
    return (cfg.epochs - part_epochs) * base + part_epochs * base * basis.part_train + refreshes * epoch * basis.refresh


# ---------------------------------------------------------------------------------------------
# Throughput files


CPU, GPU = "CPU", "GPU"
"""The kinds of device a measurement can come from (the table's ``CPU-h`` / ``GPU-h``)."""


def device_kind(device: str) -> str:
    """:data:`CPU` or :data:`GPU` for a torch device string a benchmark recorded (``cpu``, ``cuda:0``)."""
    return CPU if device.split(":")[0] == "cpu" else GPU


@dataclass(frozen=True)
class Throughput:
    """What one throughput file measured: a training basis and attack rates (images/s at 32×32, by
    (model, attack)); ``source`` names the file, ``what`` says which benchmark wrote it and on which
    device, ``device`` is that device as the file records it (``cpu``, ``cuda``); ``shape`` the input
    ``channels`` and ``classes`` it measured, where it records them; ``estimate``: the shipped rates."""
    source: str
    what: str
    basis: Basis | None = None
    attack_rates: dict[tuple[str, str], float] = field(default_factory=dict)
    device: str = "cuda"
    shape: dict[str, int] = field(default_factory=dict)
    estimate: bool = False

    @property
    def kind(self) -> str:
        return device_kind(self.device)

    @property
    def label(self) -> str:
        """How the plan names this source: ``measured (FILE)`` or ``estimate (shipped rates from FILE)``."""
        return f"estimate (shipped rates from {self.source})" if self.estimate else f"measured ({self.source})"

    def models(self) -> set[str]:
        """The models it costs a job of (training or an attack)."""
        return set(self.basis.at_epoch if self.basis else ()) | {m for m, _ in self.attack_rates}

    def train_seconds(self, cfg: RunConfig) -> float | None:
        if self.basis is None or cfg.model not in self.basis.at_epoch:
            return None
        return run_seconds(cfg, self.basis)

    def attack_seconds(self, cfg: RunConfig, attack: str, n: int) -> float | None:
        rate = self.attack_rates.get((cfg.model, attack))
        return None if rate is None else n / rate * (SHAPES[cfg.dataset][1] / BASIS_SIDE) ** 2


def load_throughput(path: str | Path) -> Throughput:
    """A throughput file, whichever benchmark wrote it (told apart by its keys)."""
    source = str(path)
    try:
        report = json.loads(Path(path).read_text())
        if "cost_basis" in report:
            return _from_device_check(report, source)
        if report.get("benchmark") == "train_throughput":
            args = report["args"]
            return Throughput(source, f"train_throughput {args['model']} on {_named(report)}",
                              basis=Basis.from_train_throughput(report), device=report["device"],
                              shape={"channels": args["channels"], "classes": args["classes"]})
        if "results" in report:
            return _from_eval_throughput(report, source)
    except KeyError as err:
        raise ValueError(f"{source}: key {err} missing from the throughput file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not JSON ({err})") from None
    raise ValueError(f"{source}: not a throughput file (expected device_check.json's 'cost_basis', train_throughput's "
                     "'benchmark': 'train_throughput' or eval_throughput's 'results')")


def _named(report: dict[str, Any]) -> str:
    """The device a benchmark ran on, with its name where the file records one: ``cpu (AMD EPYC)``."""
    name = report.get("device_name") or (report.get("environment") or {}).get("device_name")
    return f"{report['device']} ({name})" if name else report["device"]


def _rate_at_basis(rate: float, side: int) -> float:
    """Images/s measured at ``side``² as images/s at 32×32 (an attack's cost grows with the pixels)."""
    return rate * (side / BASIS_SIDE) ** 2


DEVICE_CHECK_SHAPE = {"channels": 3, "classes": 10}
"""What the device check's speed stages train on: synthetic CIFAR-10-shaped images (its full sizes)."""


def _from_device_check(report: dict[str, Any], source: str) -> Throughput:
    """The device check's cost basis (if it has one) and its AutoAttack rates: each model it attacked,
    on the first batch size it measured (the largest)."""
    basis = Basis.from_report(report) if report["cost_basis"] else None
    rates = {}
    stage = report.get("stages", {}).get("autoattack", {})
    for entry in (stage.get("result") or {}).values() if stage.get("status") == "ok" else ():
        result = entry.get("result") if entry.get("status") == "ok" else None
        timed = [b for b in (result or {}).get("per_batch_size", ()) if b["status"] == "ok"]
        if timed:
            side = SHAPES[result["dataset"].split()[0]][1]
            rates[(result["model"], "aa")] = _rate_at_basis(timed[0]["images_per_second"], side)
    if basis is None and not rates:
        raise ValueError(f"{source}: key 'cost_basis' is null and 'stages.autoattack' timed nothing: the device "
                         "check measured no cost (it was run with --tiny or its stages failed)")
    return Throughput(source, f"device_check on {_named(report)}", basis=basis, attack_rates=rates,
                      device=report["device"], shape=DEVICE_CHECK_SHAPE if basis else {})


def _from_eval_throughput(report: dict[str, Any], source: str) -> Throughput:
    """Each attack's images/s of ``benchmarks/eval_throughput.py``, on a run's dataset or synthetic images."""
    dataset = report["dataset"]
    synthetic = re.fullmatch(r"synthetic (\d+)x(\d+)x\d+", dataset)
    if synthetic is None and dataset not in SHAPES:
        raise ValueError(f"{source}: key 'dataset' is {dataset!r}; expected a dataset name or 'synthetic CxHxW'")
    channels, side = (int(synthetic[1]), int(synthetic[2])) if synthetic else SHAPES[dataset][:2]
    classes = report.get("classes") if synthetic else SHAPES[dataset][3]
    rates = {(report["model"], attack): _rate_at_basis(r["images_per_second"], side)
             for attack, r in report["results"].items()}
    return Throughput(source, f"eval_throughput {report['model']} on {_named(report)}", attack_rates=rates,
                      device=report["device"], shape={"channels": channels} | ({"classes": classes} if classes else {}))


SHIPPED_RATES = "reference/rates.json"
"""The shipped estimate, package data of ``part``: one home for the rates ``part plan`` and docs/cost.md use."""


@cache
def shipped_rates() -> dict[str, Any]:
    return json.loads(resources.files("part").joinpath(SHIPPED_RATES).read_text())


def _shipped_rate(attacks: dict[str, Any], name: str, passes_per_second: float) -> float:
    """ResNet-18's images/s at 32×32 under attack ``name``: measured, as a ratio of another's time, or from
    its forward + backward passes per image."""
    entry = attacks[name]
    if "images_per_second" in entry:
        return entry["images_per_second"]
    if "relative_to" in entry:
        return _shipped_rate(attacks, entry["relative_to"], passes_per_second) / entry["ratio"]
    return passes_per_second / entry["passes"]


def shipped_estimate() -> Throughput:
    """The shipped rates as a source: the training basis, and every attack's rate for every model it has an
    AT epoch of, at the ratio of that model's AT epoch to ResNet-18's."""
    rates = shipped_rates()
    train = rates["train"]
    basis = Basis.from_shipped(train)
    reference = basis.at_epoch[RATIO_MODEL]
    passes_per_second = BASIS_IMAGES * (basis.steps + 1) / reference
    attack_rates = {(model, name): _shipped_rate(rates["attacks"], name, passes_per_second) * reference / epoch
                    for model, epoch in basis.at_epoch.items() for name in rates["attacks"]}
    return Throughput(f"part/{SHIPPED_RATES}", f"the authors' release timed on {rates['device_name']} ({rates['train']['setting']})",
                      basis=basis, attack_rates=attack_rates, device=rates["device"], estimate=True)


def check_files(g: Grid, throughput: Iterable[Throughput]) -> list[str]:
    """What differs between each file's measured setting and the grid jobs it costs (those of its models), as
    warnings: attack steps (training rescaled), classes (used unscaled). Another number of input channels
    refuses the file (ValueError naming the file, the field, its value and the grid's)."""
    warnings = []
    for t in throughput:
        for dataset in dict.fromkeys(run.dataset for run in g.runs.values()):
            runs = [r for r in g.runs.values() if r.dataset == dataset and r.config.model in t.models()]
            if not runs:
                continue
            channels, classes = SHAPES[dataset][0], SHAPES[dataset][3]
            if t.shape.get("channels", channels) != channels:
                raise ValueError(f"{t.source}: channels {t.shape['channels']} measured, the grid's {dataset} has "
                                 f"{channels}: measure the grid's input (e.g. train_throughput.py --channels {channels})")
            if t.shape.get("classes", classes) != classes:
                warnings.append(f"{t.source}: classes {t.shape['classes']} measured, the grid's {dataset} has "
                                f"{classes}: used unscaled (only the last layer sees them)")
            trained = [r for r in runs if t.basis and r.config.model in t.basis.at_epoch]
            for steps in sorted({r.config.attack.steps for r in trained} - {t.basis.steps} if trained else ()):
                warnings.append(f"{t.source}: attack steps {t.basis.steps} measured, the grid's {dataset} runs "
                                f"attack with {steps}: their training rescaled × {steps_factor(t.basis.steps, steps):.2f} "
                                f"(({steps} + 1) / ({t.basis.steps} + 1) forward + backward passes per image)")
    return warnings


# ---------------------------------------------------------------------------------------------
# The grid's jobs, and what each one costs


@dataclass(frozen=True)
class Stage:
    """A kind of job: training (no attacks) or evaluating each of ``checkpoints``' weights with ``attacks``;
    ``rule`` is the workflow rule whose jobs these are (``rules/*.smk``). A stage without ``own_jobs`` is work
    done inside the jobs of the stage before it: its hours count, its jobs do not."""
    name: str
    attacks: tuple[str, ...] = ()
    checkpoints: tuple[str, ...] = ("last",)
    rule: str = "train"
    own_jobs: bool = True

    @property
    def resource(self) -> str:
        """The ``resources`` key its jobs ask the scheduler by."""
        return "evaluate" if self.attacks else "train"


def _evaluation_stages(g: Grid, runs: list[Run]) -> list[tuple[Stage, list[Run]]]:
    """The tables' evaluation as ``evaluation.jobs`` cuts it: one job per attack of each run (per_attack), or
    one per run for all its attacks (per_model; runs of the experiments may need fewer attacks)."""
    order = g.cfg["evaluation"]["attacks"]
    if g.eval_jobs == "per_attack":
        groups = [(attack,) for attack in order]
        members = {group: [r for r in runs if group[0] in g.attacks[r.path]] for group in groups}
    else:
        members = {}
        for run in runs:
            members.setdefault(g.attacks[run.path], []).append(run)
    rule = "evaluate" if g.eval_jobs == "per_attack" else "metrics"
    return [(Stage("+".join(attacks), attacks, (g.checkpoint,), rule), jobs) for attacks, jobs in members.items()]


def stages(g: Grid, dataset: str) -> list[tuple[Stage, list[Run]]]:
    """The GPU stages of ``dataset`` with the runs each has one job for, as the workflow's rules do
    (``rules/evaluate.smk``): training every run, the tables' evaluation per ``evaluation.jobs``, natural +
    PGD-20 on every compared checkpoint of each main-table run (per_model in the run's evaluation job, else a
    job of its own), one job per evaluation check (robustness curve, sanity) of each run its block names."""
    runs = [run for run in g.runs.values() if run.dataset == dataset]
    out = [(Stage("train"), runs), *_evaluation_stages(g, runs)]
    if g.compared_checkpoints:
        own_jobs = g.eval_jobs == "per_attack"
        name = (f"{'+'.join(vocabulary.COMPARE_ATTACKS)} ({', '.join(g.compared_checkpoints)})"
                + ("" if own_jobs else ", in the jobs above"))
        out.append((Stage(name, vocabulary.COMPARE_ATTACKS, g.compared_checkpoints, "evaluate_checkpoints",
                          own_jobs), g.main_runs(dataset)))
    out += [(Stage(check, (check,), (g.checkpoint,), "evaluate_check"), list(g.check_runs(check, dataset)))
            for check in g.checks]
    return [(stage, jobs) for stage, jobs in out if jobs]


def examples(g: Grid, dataset: str, attack: str) -> int:
    """Test images an evaluation with ``attack`` attacks (:meth:`Grid.examples`), never more than the split."""
    return min(g.examples(attack) or TEST_IMAGES[dataset], TEST_IMAGES[dataset])


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def logged_seconds(cfg: RunConfig, records: list[dict[str, Any]]) -> float:
    """A run's training seconds from its log: the epochs it logged, then :func:`remaining_seconds`."""
    return sum(r["seconds"] + r.get("val_seconds", 0.0) for r in records) + remaining_seconds(cfg, records)


def remaining_seconds(cfg: RunConfig, records: list[dict[str, Any]]) -> float:
    """A run's training seconds still to come after the epochs of ``records``: each at the mean of the logged
    ones of its phase (warm-up / PART, or all where it logged none), plus the mean refresh and validation where
    that epoch refreshes or validates (none while the log has none: a run still in its warm-up is
    underestimated by its refreshes)."""
    def train(r: dict[str, Any]) -> float:
        return r["seconds"] - r.get("refresh_seconds", 0.0)

    refresh = _mean([r["refresh_seconds"] for r in records if r.get("refreshed")])
    validate = _mean([r["val_seconds"] for r in records if "val_seconds" in r])
    phases = {part: [train(r) for r in records if (r.get("phase") == "part") == part] for part in (False, True)}
    rest = 0.0
    for epoch in range(len(records), cfg.epochs):
        rest += _mean(phases[cfg.is_part_epoch(epoch)] or [train(r) for r in records])
        rest += refresh * cfg.refreshes_at(epoch) + validate * cfg.validates_at(epoch)
    return rest


def _eval_file_seconds(path: Path, n: int) -> float:
    """An evaluation result's attack seconds, scaled to ``n`` examples if it attacked another number."""
    entry = json.loads(path.read_text())
    try:
        return entry["seconds"] * n / entry["n_examples"]
    except KeyError as err:
        raise ValueError(f"{path}: key {err} missing from the evaluation result") from None


def measured_seconds(g: Grid, run: Run, stage: Stage) -> float | None:
    """Wall-clock seconds of one job from the run's own files, or None where they hold no measurement."""
    root = g.run_dir(run)
    if not stage.attacks:
        if not RunPaths(root).log.is_file():
            return None
        records = read_log(root)
        try:
            return logged_seconds(run.config, records) if records else None
        except KeyError as err:
            raise ValueError(f"{RunPaths(root).log}: key {err} missing from an epoch record") from None
    evaluations = [(root / eval_dir_name(c) / f"{a}.json", a) for c in stage.checkpoints for a in stage.attacks]
    if not all(p.is_file() for p, _ in evaluations):
        return None
    return sum(_eval_file_seconds(p, examples(g, run.dataset, a)) for p, a in evaluations)


def throughput_seconds(g: Grid, run: Run, stage: Stage, t: Throughput) -> float | None:
    """Device-seconds of one job from a throughput file, or None where it measured nothing for it."""
    if not stage.attacks:
        return t.train_seconds(run.config)
    seconds = [t.attack_seconds(run.config, a, examples(g, run.dataset, a)) for a in stage.attacks]
    return None if None in seconds else sum(seconds) * len(stage.checkpoints)


def job_cost(g: Grid, run: Run, stage: Stage, throughput: Iterable[Throughput]) -> tuple[float, str] | None:
    """Device-seconds of one job and their source (``RUNS`` or a throughput file), in the order of precedence."""
    measured = measured_seconds(g, run, stage)
    if measured is not None:
        return measured * max(job_resources(g.cfg, stage.resource, run.dataset)["gpu"], 1), RUNS
    for t in throughput:
        seconds = throughput_seconds(g, run, stage, t)
        if seconds is not None:
            return seconds, t.label
    return None


def missing_rate(t: Throughput, cfg: RunConfig, stage: Stage) -> str:
    """Which rate a source lacks for a job of ``stage``: the model's, or the first attack's it has none of."""
    if cfg.model not in t.models() or not stage.attacks:
        return f"model {cfg.model!r}"
    return "attack " + repr(next(a for a in stage.attacks if (cfg.model, a) not in t.attack_rates))


# ---------------------------------------------------------------------------------------------
# The plan


@dataclass(frozen=True)
class PlanRow:
    """One dataset's stage (or the ``total``): its jobs, their hours (None: nothing measured) on the
    devices that measured them (``devices``: :data:`CPU` and/or :data:`GPU`; ``gpu_hours`` keeps its name
    for the callers, but holds CPU-hours where those measured) and where the number came from."""
    dataset: str
    stage: str
    jobs: int
    gpu_hours: float | None
    source: str
    devices: tuple[str, ...] = ()


def runs_device(g: Grid, run: Run, stage: Stage) -> str:
    """The kind of device a job of the grid runs (and its own files measure) on."""
    on_cpu = run.config.device == "cpu" or job_resources(g.cfg, stage.resource, run.dataset)["gpu"] == 0
    return CPU if on_cpu else GPU


def _devices(g: Grid, stage: Stage, runs: list[Run], sources: Iterable[str],
             throughput: Iterable[Throughput]) -> tuple[str, ...]:
    """The kinds of device behind a row's sources: each file's, and for ``RUNS`` its jobs'."""
    by_file = {t.label: t.kind for t in throughput}
    kinds = {kind for source in sources
             for kind in ({runs_device(g, run, stage) for run in runs} if source == RUNS else {by_file[source]})}
    return tuple(sorted(kinds))


def _source(counts: Counter[str], filled: int) -> str:
    """A row's sources: the grid's runs first, then each file, with job counts where they are mixed."""
    if not counts:
        return NO_MEASUREMENT
    keys = sorted(counts, key=lambda k: k != RUNS)
    parts = [f"runs ({counts[k]} measured)" if k == RUNS else (k if len(counts) == 1 else f"{k} ({counts[k]} jobs)")
             for k in keys]
    return ", ".join(parts) + (f"; their mean for {filled} unmeasured" if filled else "")


def plan_row(g: Grid, dataset: str, stage: Stage, runs: list[Run], throughput: Iterable[Throughput],
             estimate: Throughput | None = None) -> PlanRow:
    """One stage's jobs summed; jobs nothing measured take the mean of those something did; a row nothing
    measured is costed by ``estimate`` (the shipped rates), or says which rate it lacks."""
    costs = [c for run in runs if (c := job_cost(g, run, stage, throughput)) is not None]
    jobs = len(runs) if stage.own_jobs else 0
    if not costs and estimate is not None:
        if any(throughput_seconds(g, run, stage, estimate) is not None for run in runs):
            return plan_row(g, dataset, stage, runs, [estimate])
        lacking = missing_rate(estimate, runs[0].config, stage)
        return PlanRow(dataset, stage.name, jobs, None, f"{NO_MEASUREMENT}; no shipped rate for {lacking}")
    if not costs:
        return PlanRow(dataset, stage.name, jobs, None, NO_MEASUREMENT)
    seconds = [s for s, _ in costs]
    filled = len(runs) - len(costs)
    total = sum(seconds) + filled * _mean(seconds)
    sources = Counter(k for _, k in costs)
    return PlanRow(dataset, stage.name, jobs, total / 3600, _source(sources, filled),
                   _devices(g, stage, runs, sources, throughput))


ESTIMATED = "estimate"
"""How the total row's source begins where any row was costed by the shipped rates."""


def total_row(rows: list[PlanRow]) -> PlanRow:
    """Every job; the hours of the rows that have a number, a lower bound where some have none; an estimate
    where any row's number is the shipped rates'."""
    known = [r.gpu_hours for r in rows if r.gpu_hours is not None]
    missing = len(rows) - len(known)
    source = (f"sum of all {len(rows)} rows" if not missing else
              f"lower bound: {missing} of {len(rows)} rows have no measurement" if known else NO_MEASUREMENT)
    estimated = sum(r.source.startswith(ESTIMATED) for r in rows)
    if estimated and known:
        source = f"{ESTIMATED} ({estimated} of {len(rows)} rows from the shipped rates): {source}"
    return PlanRow("total", "all", sum(r.jobs for r in rows), sum(known) if known else None, source,
                   tuple(sorted({d for r in rows for d in r.devices})))


def plan(g: Grid, throughput: Iterable[Throughput] = (), estimate: Throughput | None = None) -> list[PlanRow]:
    """Per dataset and stage the jobs and device-hours of ``g``, then the total row; ``estimate`` (e.g.
    :func:`shipped_estimate`) costs the rows nothing measured. Refuses a file :func:`check_files` refuses."""
    throughput = list(throughput)
    check_files(g, throughput)
    rows = [plan_row(g, dataset, stage, runs, throughput, estimate)
            for dataset in g.datasets for stage, runs in stages(g, dataset)]
    return [*rows, total_row(rows)]


def with_profile(cfg: dict[str, Any], profile: str | Path) -> dict[str, Any]:
    """The workflow config as a Snakemake profile directory's ``config:`` entries (``KEY=YAML``, merged over
    the config file as Snakemake does) change it: ``profiles/slurm`` cuts evaluation per attack."""
    path = Path(profile) / "config.yaml"
    entries = (yaml.safe_load(path.read_text()) or {}).get("config") or []
    for entry in entries:
        key, sep, value = entry.partition("=")
        if not sep:
            raise ValueError(f"{path}: config entry {entry!r}: expected KEY=VALUE")
        cfg = deep_merge(cfg, {key: yaml.safe_load(value)})
    return cfg


# ---------------------------------------------------------------------------------------------
# Rendering


def header(rows: list[PlanRow]) -> tuple[str, ...]:
    """The columns, the hours' unit named by the devices that measured them: ``GPU-h`` or ``CPU-h`` where one
    kind did (``GPU-h`` where nothing did), ``device-h`` where both did (each row then names its own)."""
    kinds = {d for r in rows for d in r.devices}
    unit = "device-h" if len(kinds) > 1 else f"{next(iter(kinds), GPU)}-h"
    return "dataset", "stage", "jobs", unit, "source"


def hours(h: float) -> str:
    """Hours to two decimals, or two significant digits below 0.1 (a demo's stages are seconds)."""
    return f"{h:.2f}" if h >= 0.1 else f"{h:.2g}"


def _cells(row: PlanRow, mixed: bool = False) -> tuple[str, ...]:
    """A row's cells; ``mixed``: the table adds GPU- and CPU-hours, so the hours name their device."""
    value = "—" if row.gpu_hours is None else hours(row.gpu_hours)
    if mixed and row.gpu_hours is not None:
        value += f" {'+'.join(row.devices)}"
    return row.dataset, row.stage, str(row.jobs), value, row.source


def _table(rows: list[PlanRow]) -> list[tuple[str, ...]]:
    head = header(rows)
    return [head, *(_cells(r, head[3] == "device-h") for r in rows)]


def markdown(rows: list[PlanRow]) -> str:
    head, *body = _table(rows)
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|---:|---|"]
    lines += ["| " + " | ".join(c) + " |" for c in body]
    return "\n".join(lines) + "\n"


def text(rows: list[PlanRow]) -> str:
    """Aligned columns (numbers right-aligned), a rule above the total."""
    cells = _table(rows)
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]

    def line(c: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(w) if i in (2, 3) else v.ljust(w) for i, (v, w) in enumerate(zip(c, widths))).rstrip()

    body = [line(c) for c in cells]
    return "\n".join([body[0], *body[1:-1], "-" * len(max(body, key=len)), body[-1]]) + "\n"


def legend(throughput: Iterable[Throughput]) -> str:
    """One line saying what each source means and which device it measured."""
    files = "; ".join(f"{t.label} = {t.what} [{t.kind}-h]" for t in throughput)
    return (f"sources: runs = the grid's own log.jsonl / eval JSON timings, on the device each job ran on "
            f"[CPU-h where it asks for no GPU or trains on device: cpu]; {files + '; ' if files else ''}"
            "— = no measurement (pass --throughput FILE)")


def summary(rows: list[PlanRow]) -> str:
    """The total in words: its jobs, its hours and where they came from (an estimate, measured, a lower bound)."""
    total = rows[-1]
    if total.gpu_hours is None:
        return "total: no number (nothing measured, and no shipped rate for these jobs)"
    return f"total: {total.jobs} jobs, ≈ {hours(total.gpu_hours)} {header(rows)[3]}: {total.source}"
