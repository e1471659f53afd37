"""The experiment grid of the workflow: from ``config.yaml`` to one validated run config per job.

Kept in the package (not in the Snakefile) so that the expansion and its validation are plain,
tested Python, and so that a mistake anywhere in the grid — a typo, an unknown method, ε_low > ε
in one variant — stops the workflow before any job starts, with the key named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import jsonschema

from part import config as run_config
from part.config import ConfigError, RunConfig


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
        return f"{self.dataset}/{self.arch}/{self.variant}/seed{self.seed}"


def workflow_schema() -> dict[str, Any]:
    return json.loads(resources.files("part").joinpath("schema/workflow.schema.json").read_text())


def validate(cfg: dict[str, Any], source: str = "config.yaml") -> None:
    """Check the workflow config's shape (JSON schema), then every run it expands to."""
    errors = sorted(jsonschema.Draft202012Validator(workflow_schema()).iter_errors(cfg),
                    key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        path = ".".join(str(p) for p in err.absolute_path) or "<top level>"
        raise ConfigError(f"{source}: key '{path}': {err.message}")
    all_runs(cfg, source)


def run_overrides(cfg: dict[str, Any], dataset: str, variant: str, seed: int) -> dict[str, Any]:
    """The partial run config of one grid cell: global, then dataset, then variant settings."""
    merged = run_config.deep_merge(cfg.get("run") or {}, cfg["datasets"][dataset].get("run") or {})
    merged = run_config.deep_merge(merged, variant_specs(cfg)[variant]["run"])
    return run_config.deep_merge(merged, {"dataset": dataset, "model": cfg["datasets"][dataset]["arch"],
                                          "seed": seed, "data_dir": cfg["data"]["prepared_dir"]})


def _build_run(cfg: dict[str, Any], dataset: str, variant: str, seed: int, where: str) -> Run:
    rc = run_config.from_dict(run_overrides(cfg, dataset, variant, seed), where)
    return Run(dataset, cfg["datasets"][dataset]["arch"], variant, seed, rc)


def expand(cfg: dict[str, Any], source: str = "config.yaml") -> list[Run]:
    """Every (dataset, variant, seed) run of the main table, each validated as a full run config."""
    return [_build_run(cfg, dataset, variant, seed, f"{source} (datasets.{dataset} x variants.{variant} x seed {seed})")
            for dataset in cfg["datasets"] for variant in cfg["variants"] for seed in cfg["seeds"]]


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


def variant_specs(cfg: dict[str, Any], source: str = "config.yaml") -> dict[str, dict[str, Any]]:
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


def experiments(cfg: dict[str, Any], source: str = "config.yaml") -> dict[str, Experiment]:
    """The config's ``experiments``, each checked against the grid it draws on."""
    specs = variant_specs(cfg, source)
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


def experiment_runs(cfg: dict[str, Any], exp: Experiment, source: str = "config.yaml") -> list[Run]:
    """Every (dataset, variant, seed) run an experiment reads, each validated as a full run config."""
    runs = []
    for dataset in exp.datasets:
        for row in exp.rows:
            for seed in exp.seeds:
                where = f"{source} (experiments.{exp.name}: datasets.{dataset} x variants.{row.key} x seed {seed})"
                runs.append(_build_run(cfg, dataset, row.variant, seed, where))
    if exp.x is not None:
        for run in runs:
            x_value(run, exp.x, f"{source}: key 'experiments.{exp.name}.x'")
    return runs


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
"""Every file of the main table's tables (``part.aggregate.write_tables``), by key, below ``results/tables``;
here, like :func:`experiment_outputs`, so the workflow declares them without importing pandas."""


def table_outputs(results_dir: str | Path) -> dict[str, Path]:
    """The main table's files below ``results_dir`` (the aggregate rule's outputs)."""
    return {key: Path(results_dir) / "tables" / name for key, name in TABLE_FILES.items()}


def experiment_outputs(results_dir: str | Path, name: str) -> dict[str, Path]:
    """Every file one experiment's table + figure job writes (``part.experiments.write``).

    Here rather than beside the plotting code so the workflow can declare them without importing
    matplotlib and torch when it parses the Snakefile.
    """
    root = Path(results_dir) / "experiments" / name
    return {"per_seed": root / "per_seed.csv", "summary": root / "summary.csv", "csv": root / f"{name}.csv",
            "md": root / f"{name}.md", "png": root / f"{name}.png", "pdf": root / f"{name}.pdf"}


def job_resources(cfg: dict[str, Any], stage: str, dataset: str) -> dict[str, Any]:
    """What one job of ``stage`` on ``dataset`` asks the scheduler for: ``resources.<stage>`` with the
    dataset's ``datasets.<name>.resources.<stage>`` over it (e.g. ``gpu: 4`` trains TinyImageNet's
    WRN-34-10 on four GPUs of one node). ``cpus_per_gpu`` is per GPU; jobs never span nodes."""
    return {"nodes": 1, **cfg["resources"][stage],
            **cfg["datasets"][dataset].get("resources", {}).get(stage, {})}


def all_runs(cfg: dict[str, Any], source: str = "config.yaml") -> dict[str, Run]:
    """The main table's runs and every experiment's, once each, by results path (main table first)."""
    runs = {run.path: run for run in expand(cfg, source)}
    for exp in experiments(cfg, source).values():
        for run in experiment_runs(cfg, exp, source):
            runs.setdefault(run.path, run)
    return runs


def run_attacks(cfg: dict[str, Any], source: str = "config.yaml") -> dict[str, list[str]]:
    """The attacks each run is evaluated with: every attack any table that reads it needs.

    A main-table run gets ``evaluation.attacks``; an experiment run the union over the experiments
    that read it — in ``evaluation.attacks`` order, so the metrics rule's inputs are stable.
    """
    needed: dict[str, set[str]] = {run.path: set(cfg["evaluation"]["attacks"]) for run in expand(cfg, source)}
    for exp in experiments(cfg, source).values():
        for run in experiment_runs(cfg, exp, source):
            needed.setdefault(run.path, set()).update(exp.attacks)
    return {path: [a for a in cfg["evaluation"]["attacks"] if a in attacks] for path, attacks in needed.items()}
