"""The experiment grid of the workflow: from ``config.yaml`` to one validated run config per job.

Kept in the package (not in the Snakefile) so that the expansion and its validation are plain,
tested Python, and so that a mistake anywhere in the grid — a typo, an unknown method, ε_low > ε
in one variant — stops the workflow before any job starts, with the key named.

:func:`load` builds the :class:`Grid` once: every run config is built and validated once, however
many tables and experiments read it, and every rule file asks that one object for its runs, attacks,
experiments, tables and figures. Nothing here imports torch, matplotlib or pandas: the Snakefile
parse (paid again by every SLURM job) stays a fraction of a second of grid work.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from collections.abc import Iterable
from typing import Any, NoReturn

import jsonschema

from part.base import config as run_config, files, rundir, vocabulary
from part.base.config import ConfigError, RunConfig
from part.base.errors import echo

RUN_PATH = "{dataset}/{arch}/{variant}/seed{seed}"
"""A run's directory below the results directory; also the Snakemake rules' wildcard pattern."""


@dataclass(frozen=True)
class Run:
    dataset: str
    arch: str
    variant: str
    seed: int
    config: RunConfig

    @property
    def path(self) -> str:
        """Directory of this run below the results directory."""
        return RUN_PATH.format(dataset=self.dataset, arch=self.arch, variant=self.variant, seed=self.seed)


@dataclass(frozen=True)
class Variant:
    """A table row's identity: its label and family as the config names them, its method as its runs train."""
    name: str
    label: str
    family: str
    method: str

    @property
    def is_part(self) -> bool:
        return self.method in vocabulary.PART_METHODS

    @property
    def is_base(self) -> bool:
        """A family's base method (at, trades, mart): where the PART rows' differences are taken from."""
        return vocabulary.BASE_METHOD[self.method] == self.method and self.method != "natural"


def workflow_schema() -> dict[str, Any]:
    return json.loads(resources.files("part").joinpath("schema/workflow.schema.json").read_text())


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(workflow_schema())


def _check_shape(cfg: dict[str, Any], source: str) -> None:
    """The workflow config against its JSON schema; the first error, with its key."""
    errors = sorted(_validator().iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        message = run_config.described_message(err)
        if err.validator == "additionalProperties":  # name the unknown key and the keys allowed beside it
            path, message = run_config.error_key(err), run_config.error_message(err)
        raise ConfigError(f"{source}: key '{path}': {message}")
    if (key := run_config.non_finite_key(cfg)) is not None:
        raise ConfigError(f"{source}: key '{key}': expected a finite number, got NaN or infinity")
    for key, directory in DIRECTORY_KEYS.items():
        if (blocker := files.file_in_the_way(directory(cfg))) is not None:
            raise ConfigError(f"{source}: key '{key}': {directory(cfg)!r} cannot be a directory, {blocker} is a file; "
                              "expected a directory (or a path where one can be created)")


DIRECTORY_KEYS = {"results_dir": lambda cfg: cfg["results_dir"], "data.raw_dir": lambda cfg: cfg["data"]["raw_dir"],
                  "data.prepared_dir": lambda cfg: cfg["data"]["prepared_dir"]}
"""The workflow config's directories, by key: a regular file where one is named would surface as "0 runs
evaluated" or as a raw error of the dry run."""


def _overrides(cfg: dict[str, Any], spec: dict[str, Any], dataset: str, seed: int) -> dict[str, Any]:
    """The partial run config of one grid cell: global, then dataset, then variant (``spec``) settings."""
    merged = run_config.deep_merge(cfg.get("run") or {}, cfg["datasets"][dataset].get("run") or {})
    merged = run_config.deep_merge(merged, spec["run"])
    return run_config.deep_merge(merged, {"dataset": dataset, "model": cfg["datasets"][dataset]["arch"],
                                          "seed": seed, "data_dir": cfg["data"]["prepared_dir"]})


@dataclass(frozen=True)
class Row:
    """One variant of an experiment: the runs it reads (``variant``) and how its table row is named."""
    key: str
    variant: str
    label: str
    family: str


@dataclass(frozen=True)
class Experiment:
    """An experiment beyond the main table with its defaults filled in and its references resolved."""
    name: str
    title: str
    x: str | None
    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    attacks: tuple[str, ...]
    reference: str | None
    timing: bool
    rows: tuple[Row, ...]


DEFAULT_EXPERIMENT_ATTACKS = ("natural", "pgd20")
REPRODUCTION_TOLERANCE = 1.0
"""Points within which a cell counts as reproduced (the workflow's ``statistics.reproduction_tolerance``); also
the evaluation's convergence check's tolerance (``part.evaluation.sanity``), so a check that passes cannot hide a failed
reproduction."""


def _variant_specs(cfg: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Every variant that defines runs: the main table's, then each experiment's full specs.

    The name is the run directory, so it must mean one run config: a name defined twice — in
    ``variants`` and in an experiment, or in two experiments — is an error naming both keys.
    """
    specs = dict(cfg["variants"])
    where = {name: f"variants.{name}" for name in specs}
    for exp_name, exp in (cfg.get("experiments") or {}).items():
        for name, entry in exp["variants"].items():
            if not isinstance(entry, dict) or "use" in entry:
                continue
            key = f"experiments.{exp_name}.variants.{name}"
            if name in specs:
                raise ConfigError(f"{source}: key '{key}': variant name {name!r} is already defined by '{where[name]}'; "
                                  "variant names are run directories and must be unique (reuse it with "
                                  f"`{name}: {{use: {name}}}` under another key, or rename it)")
            specs[name], where[name] = entry, key
    return specs


def _experiments(cfg: dict[str, Any], specs: dict[str, dict[str, Any]], source: str) -> dict[str, Experiment]:
    """The config's ``experiments``, each checked against the grid it draws on."""
    return {name: _experiment(cfg, name, spec, specs, source) for name, spec in (cfg.get("experiments") or {}).items()}


def _experiment(cfg: dict[str, Any], name: str, spec: dict[str, Any], specs: dict[str, dict[str, Any]],
                source: str) -> Experiment:
    def fail(key: str, msg: str) -> NoReturn:
        raise ConfigError(f"{source}: key 'experiments.{name}.{key}': {msg}")

    datasets = tuple(spec.get("datasets") or cfg["datasets"])
    if unknown := [d for d in datasets if d not in cfg["datasets"]]:
        fail("datasets", f"{unknown} not in datasets ({', '.join(cfg['datasets'])})")
    attacks = tuple(spec.get("attacks") or DEFAULT_EXPERIMENT_ATTACKS)
    if unknown := [a for a in attacks if a not in cfg["evaluation"]["attacks"]]:
        fail("attacks", f"{unknown} not in evaluation.attacks ({', '.join(cfg['evaluation']['attacks'])})")
    rows, used = [], {}
    for key, entry in spec["variants"].items():
        row = _row(key, entry, specs)
        if row is None:
            fail(f"variants.{key}", f"uses {entry['use'] if isinstance(entry, dict) else entry!r}, which no variant "
                                    f"defines (known: {', '.join(specs)})")
        if row.variant in used:
            fail(f"variants.{key}", f"reads the runs of {row.variant!r} as variants.{used[row.variant]} already does")
        used[row.variant] = key
        rows.append(row)
    _check_labels(f"experiments.{name}.variants", {row.key: row.label for row in rows}, source)
    return Experiment(name, spec["title"], spec.get("x"), datasets, tuple(spec.get("seeds") or cfg["seeds"]), attacks,
                      spec.get("reference"), bool(spec.get("timing", False)), tuple(rows))


def _row(key: str, entry: str | dict[str, Any], specs: dict[str, dict[str, Any]]) -> Row | None:
    """The row of a variant entry: its own spec, or the spec it reuses (None if that does not exist)."""
    if isinstance(entry, dict) and "use" not in entry:
        return Row(key, key, entry["label"], entry["family"])
    target = entry["use"] if isinstance(entry, dict) else entry
    if target not in specs:
        return None
    label = entry.get("label") if isinstance(entry, dict) else None
    return Row(key, target, label or specs[target]["label"], specs[target]["family"])


def x_value(run: Run, path: str, where: str = "x") -> float:
    """The numeric run-config value at a dotted key (``attack.eps_low``): an experiment's x axis."""
    value: Any = run.config
    for part in path.split("."):
        if not hasattr(value, part):
            raise ConfigError(f"{where}: {path!r} is not a run-config key (run {run.path})")
        value = getattr(value, part)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {path!r} is {value!r} in run {run.path}; an x axis needs a number "
                          "(leave x out for categorical variants)")
    return float(value)


TABLE_FILES = {"per_seed": "per_seed.csv", "summary": "summary.csv", "main_csv": "main.csv", "main_md": "main.md",
               "main_tex": "main.tex", "paper_csv": "paper_vs_reproduction.csv",
               "paper_md": "paper_vs_reproduction.md", "verdicts_csv": "claim_verdicts.csv",
               "verdicts_md": "claim_verdicts.md"}
"""Every file of the main table's tables (``part.analysis.aggregate.write_tables``), by key, below ``results/tables``;
here, like :func:`experiment_outputs`, so the workflow declares them without importing pandas."""


def table_outputs(results_dir: str | Path) -> dict[str, Path]:
    """The main table's files below ``results_dir`` (the aggregate rule's outputs)."""
    return {key: Path(results_dir) / "tables" / name for key, name in TABLE_FILES.items()}


def experiment_outputs(results_dir: str | Path, name: str) -> dict[str, Path]:
    """Every file one experiment's table + figure job writes (``part.analysis.experiments.write``).

    Here rather than beside the plotting code so the workflow can declare them without importing
    matplotlib and torch when it parses the Snakefile.
    """
    root = Path(results_dir) / "experiments" / name
    return {"per_seed": root / "per_seed.csv", "summary": root / "summary.csv", "csv": root / f"{name}.csv",
            "md": root / f"{name}.md", "png": root / f"{name}.png", "pdf": root / f"{name}.pdf"}


CHECKPOINT_TABLE_FILES = {"csv": "checkpoints.csv", "md": "checkpoints.md"}
"""The best-vs-last (and EMA) comparison's files in the tables directory (``part.analysis.checkpoint_table``)."""


def checkpoint_table_outputs(results_dir: str | Path) -> dict[str, Path]:
    """The comparison's files below ``results_dir`` (the checkpoints_table rule's outputs)."""
    return {key: Path(results_dir) / "tables" / name for key, name in CHECKPOINT_TABLE_FILES.items()}


CHECK_TABLE_FILES = {"curve_csv": "robustness_curve.csv", "curve_md": "robustness_curve.md",
                     "sanity_csv": "sanity.csv", "sanity_md": "sanity.md"}
"""The robustness curve's and the evaluation checks' tables in the tables directory (``part.analysis.curve_table``)."""


CHECK_BLOCKS = {"curve": "robustness_curve", "sanity": "sanity"}
"""Each evaluation check's block under ``evaluation`` in the workflow config (absent or null: off)."""


def check_table_outputs(results_dir: str | Path, check: str | None = None) -> dict[str, Path]:
    """The curve and sanity tables below ``results_dir`` (``part.analysis.curve_table.write_curve_table`` /
    ``write_sanity_table``), or only those of ``check``."""
    return {key: Path(results_dir) / "tables" / name for key, name in CHECK_TABLE_FILES.items()
            if check is None or key.startswith(check)}


def curve_figure_stem(dataset: str) -> str:
    """The stem (below ``results/figures/``) of a dataset's robustness-curve figure (``part.analysis.plots.plot_curve``)."""
    return f"robustness_curve_{dataset}"


COMPUTE_RULES = {"train": "train", "evaluate": "evaluate", "evaluate_check": "evaluate",
                 "evaluate_checkpoints": "evaluate"}
"""The workflow's rules whose jobs ask for a GPU (where one is configured), by their ``resources`` key: what the
rules request (rules/common.smk's ``job_resources``) and what ``results/README.md`` counts GPU-hours of."""


def compute_resource(cfg: dict[str, Any], rule: str) -> str | None:
    """The ``resources`` key a job of workflow rule ``rule`` asks the scheduler with; None for a job on the host
    (tables, figures, downloads). ``metrics`` evaluates under ``evaluation.jobs: per_model``, else it only merges."""
    if rule == "metrics":
        return "evaluate" if cfg["evaluation"].get("jobs", "per_model") == "per_model" else None
    return COMPUTE_RULES.get(rule)


def job_resources(cfg: dict[str, Any], stage: str, dataset: str) -> dict[str, Any]:
    """What one job of ``stage`` on ``dataset`` asks the scheduler for: ``resources.<stage>`` with the
    dataset's ``datasets.<name>.resources.<stage>`` over it (e.g. ``gpu: 4`` trains TinyImageNet's
    WRN-34-10 on four GPUs of one node). ``cpus_per_gpu`` is per GPU; jobs never span nodes."""
    return {"nodes": 1, **cfg["resources"][stage],
            **cfg["datasets"][dataset].get("resources", {}).get(stage, {})}


@dataclass(frozen=True)
class Grid:
    """A workflow config, validated, with everything its rules and scripts ask of it.

    ``main`` are the main table's runs in config order; ``runs`` every run any target reads (main
    table first, then the experiments'), once each, by results path; ``attacks`` what each run is
    evaluated with (every attack of every table that reads it, in ``evaluation.attacks`` order);
    ``variants`` the main table's rows.
    """
    cfg: dict[str, Any]
    main: tuple[Run, ...]
    experiments: dict[str, Experiment]
    experiment_runs: dict[str, tuple[Run, ...]]
    runs: dict[str, Run]
    attacks: dict[str, tuple[str, ...]]
    variants: dict[str, Variant]

    @property
    def results_dir(self) -> Path:
        return Path(self.cfg["results_dir"])

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(self.cfg["datasets"])

    @property
    def checkpoint(self) -> str:
        """The weights every table reads (``evaluation.checkpoint``; the paper's final epoch by default)."""
        return self.cfg["evaluation"].get("checkpoint", "last")

    @property
    def metrics_name(self) -> str:
        """The merged-results file of :attr:`checkpoint` in each run directory."""
        return rundir.metrics_name(self.checkpoint)

    @property
    def eval_jobs(self) -> str:
        """How each run's evaluation is cut into workflow jobs (``evaluation.jobs``, part.base.vocabulary.EVAL_JOBS)."""
        return self.cfg["evaluation"].get("jobs", "per_model")

    def examples(self, attack: str) -> int | None:
        """Test images an evaluation with ``attack`` (or check) uses (None: the whole test split): AutoAttack may
        run on a subset (``evaluation.aa_n_examples``), a check on its block's ``n_examples``, everything else
        on ``evaluation.n_examples``."""
        evaluation = self.cfg["evaluation"]
        own = (evaluation.get("aa_n_examples") if attack in vocabulary.AUTOATTACKS else
               self._check_block(attack).get("n_examples") if attack in CHECK_BLOCKS else None)
        return own or evaluation.get("n_examples")

    @property
    def compared_checkpoints(self) -> tuple[str, ...]:
        """The further weights of the main runs that are evaluated and compared with :attr:`checkpoint`."""
        asked = set(self.cfg["evaluation"].get("compare_checkpoints", ())) - {self.checkpoint}
        return tuple(c for c in vocabulary.CHECKPOINTS if c in asked)

    def run_dir(self, run: Run) -> Path:
        return self.results_dir / run.path

    def main_runs(self, dataset: str | None = None) -> list[Run]:
        """The main table's runs, of one dataset if given."""
        return [run for run in self.main if dataset is None or run.dataset == dataset]

    def run_at(self, path: str | Path) -> Run:
        """The run whose directory holds ``path`` (a run directory or a file in it, below the results directory)."""
        path = Path(path)
        parts: tuple[str, ...] = ()
        for below, root in ((path, self.results_dir), (path.resolve(), self.results_dir.resolve())):
            if below.is_relative_to(root):
                parts = below.relative_to(root).parts
                break
        key = "/".join(parts[:4])
        if key not in self.runs:
            raise ConfigError(f"{path}: not in a run directory of this grid (expected "
                              f"{self.results_dir}/{RUN_PATH}/..., for one of its {len(self.runs)} runs)")
        return self.runs[key]

    def experiment_variants(self, name: str) -> dict[str, Variant]:
        """An experiment's rows as table rows, keyed by the variant whose runs they read."""
        methods = {run.variant: run.config.method for run in self.experiment_runs[name]}
        return {row.variant: Variant(row.variant, row.label, row.family, methods[row.variant])
                for row in self.experiments[name].rows}

    def gallery_run(self, dataset: str) -> Run | None:
        """The run the gallery shows: the first CAM-based PART variant in config order, first seed."""
        return next((run for run in self.main_runs(dataset) if run.config.pixel_reweighted
                     and run.config.mask.recipe in vocabulary.CAM_RECIPES), None)

    def figure_stems(self) -> list[str]:
        """The file stems (below ``results/figures/``) of every figure of the grid.

        A trade-off and training curves per dataset always; validation curves per dataset whose main runs
        all validate; a gallery per dataset that has a CAM-based
        PART run; the ε-map statistics and the claim's differences once any run is pixel-reweighted.
        """
        stems = ["tradeoff", *(f"training_curves_{d}" for d in self.datasets)]
        stems += [f"validation_{d}" for d in self.datasets if self.validated(d)]
        stems += [f"gallery_{d}" for d in self.datasets if self.gallery_run(d) is not None]
        stems += [curve_figure_stem(d) for d in self.datasets if self.check_runs("curve", d)]
        return stems + (["eps_share", "claim"] if any(run.config.pixel_reweighted for run in self.main) else [])

    def validated(self, dataset: str) -> bool:
        """Whether every main run of ``dataset`` holds out a validation split (``validation.size`` > 0)."""
        return all(run.config.validation.size > 0 for run in self.main_runs(dataset))

    @property
    def checks(self) -> tuple[str, ...]:
        """The evaluation checks (part.base.vocabulary.CHECKS) whose block the config sets."""
        return tuple(c for c in vocabulary.CHECKS if self.cfg["evaluation"].get(CHECK_BLOCKS[c]))

    def _check_block(self, check: str) -> dict[str, Any]:
        return self.cfg["evaluation"].get(CHECK_BLOCKS[check]) or {}

    def check_runs(self, check: str, dataset: str | None = None) -> tuple[Run, ...]:
        """The main-table runs ``check`` evaluates (of ``dataset`` if given): its block's ``variants`` (default:
        every one) × ``seeds`` (default: the grid's first), none while the check is off."""
        if check not in self.checks:
            return ()
        block = self._check_block(check)
        variants, seeds = block.get("variants") or list(self.variants), block.get("seeds") or self.cfg["seeds"][:1]
        return tuple(r for r in self.main if r.variant in variants and r.seed in seeds
                     and (dataset is None or r.dataset == dataset))

    def transfer_source(self, run: Run) -> Run | None:
        """The sanity check's source of transferred examples for ``run``: the same variant's run of the grid's
        next seed (the first after the last); None with one seed or ``evaluation.sanity.transfer: false``."""
        seeds = self.cfg["seeds"]
        if not self._check_block("sanity").get("transfer", True) or len(seeds) < 2:
            return None
        seed = seeds[(seeds.index(run.seed) + 1) % len(seeds)]
        return self.runs[RUN_PATH.format(dataset=run.dataset, arch=run.arch, variant=run.variant, seed=seed)]

    def check_parameters(self, run: Run, check: str) -> dict[str, Any]:
        """``check``'s parameters for ``run`` as ``part.evaluation.evaluate.evaluate`` takes them (``curve=`` / ``sanity=``)."""
        params = {k: v for k, v in self._check_block(check).items() if k not in ("variants", "seeds", "transfer")}
        if check == "sanity":
            source = self.transfer_source(run)
            params["transfer_from"] = None if source is None else str(self.run_dir(source))
        return params

    def check_result(self, run: Run, check: str) -> Path:
        """Where a run's evaluation check (``curve``, ``sanity``) of the tables' checkpoint is written."""
        return self.run_dir(run) / rundir.eval_dir_name(self.checkpoint) / f"{check}.json"

    def existing(self, name: str, runs: Iterable[Run] | None = None) -> list[Path]:
        """The file ``name`` (``metrics.json``, ``log.jsonl``) of those of ``runs`` (default: the main table's)
        that have one: what a partial grid is tabulated from outside the workflow, which declares every file."""
        return [path for run in (self.main if runs is None else runs) if (path := self.run_dir(run) / name).is_file()]


def load(cfg: dict[str, Any], source: str = "config.yaml") -> Grid:
    """Validate a workflow config (schema, then every run it implies) and build its :class:`Grid`.

    Each (dataset, variant, seed) run config is built once, whichever tables read it.
    """
    _check_shape(cfg, source)
    specs = _variant_specs(cfg, source)
    runs: dict[str, Run] = {}

    def run(dataset: str, variant: str, seed: int, where: str) -> Run:
        arch = cfg["datasets"][dataset]["arch"]
        path = RUN_PATH.format(dataset=dataset, arch=arch, variant=variant, seed=seed)
        if path not in runs:
            config = run_config.from_dict(_overrides(cfg, specs[variant], dataset, seed), f"{source} ({where})")
            runs[path] = Run(dataset, arch, variant, seed, config)
        return runs[path]

    main = tuple(run(d, v, s, f"datasets.{d} x variants.{v} x seed {s}")
                 for d in cfg["datasets"] for v in cfg["variants"] for s in cfg["seeds"])
    attacks = {r.path: set(cfg["evaluation"]["attacks"]) for r in main}
    exps = _experiments(cfg, specs, source)
    exp_runs = {}
    for exp in exps.values():
        exp_runs[exp.name] = tuple(run(d, row.variant, s, f"experiments.{exp.name}: datasets.{d} x "
                                                         f"variants.{row.key} x seed {s}")
                                   for d in exp.datasets for row in exp.rows for s in exp.seeds)
        for r in exp_runs[exp.name]:
            attacks.setdefault(r.path, set()).update(exp.attacks)
            if exp.x is not None:
                x_value(r, exp.x, f"{source}: key 'experiments.{exp.name}.x'")
    order = cfg["evaluation"]["attacks"]
    g = Grid(cfg, main, exps, exp_runs, runs,
             {path: tuple(a for a in order if a in needed) for path, needed in attacks.items()},
             _main_variants(cfg, main, source))
    _check_checkpoints(g, source)
    _check_check_blocks(g, source)
    return g


def _check_check_blocks(g: Grid, source: str) -> None:
    """The variants and seeds an evaluation check names are the main table's."""
    for check in g.checks:
        block = g.cfg["evaluation"][CHECK_BLOCKS[check]]
        for key, known in (("variants", list(g.variants)), ("seeds", g.cfg["seeds"])):
            if unknown := [v for v in block.get(key) or () if v not in known]:
                raise ConfigError(f"{source}: key 'evaluation.{CHECK_BLOCKS[check]}.{key}': {unknown} not in the main "
                                  f"table's {key} ({', '.join(map(str, known))})")


KEEPS = {"best": ("validation.size", lambda c: c.validation.size > 0),
         "ema": ("ema.decay", lambda c: c.ema.decay > 0)}
"""What a run's config must set for it to keep the weights of a checkpoint beside its final ones."""


def _check_checkpoints(g: Grid, source: str) -> None:
    """Every run a checkpoint is evaluated for keeps those weights: the main one for every run, the
    compared ones for the main table's."""
    wanted = [("evaluation.checkpoint", g.checkpoint, g.runs.values()),
              *(("evaluation.compare_checkpoints", c, g.main) for c in g.compared_checkpoints)]
    for key, checkpoint, runs in wanted:
        if checkpoint not in KEEPS:
            continue
        setting, kept = KEEPS[checkpoint]
        lacking = [run.path for run in runs if not kept(run.config)]
        if lacking:
            raise ConfigError(f"{source}: key '{key}': {checkpoint} weights are kept only by runs with "
                              f"'{setting}' > 0, and {len(lacking)} run(s) have none (first: {lacking[0]}); set "
                              f"run.{setting} (or the variants' / datasets' run.{setting})")


def _main_variants(cfg: dict[str, Any], main: tuple[Run, ...], source: str) -> dict[str, Variant]:
    """The main table's rows; a variant must train one method on every dataset (its row's family role)."""
    methods: dict[str, dict[str, str]] = {}
    for r in main:
        methods.setdefault(r.variant, {})[r.dataset] = r.config.method
    for name, by_dataset in methods.items():
        if len(set(by_dataset.values())) > 1:
            raise ConfigError(f"{source}: key 'variants.{name}': trains different methods on different datasets "
                              f"({by_dataset}); a table row needs one method (make them separate variants)")
    _check_labels("variants", {name: spec["label"] for name, spec in cfg["variants"].items()}, source)
    return {name: Variant(name, spec["label"], spec["family"], next(iter(methods[name].values())))
            for name, spec in cfg["variants"].items()}


def _check_labels(key: str, labels: dict[str, str], source: str) -> None:
    """The rows of one table have different labels: two rows of one label cannot be told apart in it."""
    first: dict[str, str] = {}
    for name, label in labels.items():
        if label in first:
            raise ConfigError(f"{source}: key '{key}.{name}.label': got {echo(label)}, the label of '{key}.{first[label]}' "
                              "too; expected a label of its own (each is a row of one table)")
        first[label] = name
