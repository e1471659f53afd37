"""The experiment grid of the workflow: from ``config.yaml`` to one validated run config per job.

Kept in the package (not in the Snakefile) so that the expansion and its validation are plain,
tested Python, and so that a mistake anywhere in the grid — a typo, an unknown method, ε_low > ε
in one variant — stops the workflow before any job starts, with the key named.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

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
    expand(cfg, source)


def run_overrides(cfg: dict[str, Any], dataset: str, variant: str, seed: int) -> dict[str, Any]:
    """The partial run config of one grid cell: global, then dataset, then variant settings."""
    merged = run_config.deep_merge(cfg.get("run") or {}, cfg["datasets"][dataset].get("run") or {})
    merged = run_config.deep_merge(merged, cfg["variants"][variant]["run"])
    return run_config.deep_merge(merged, {"dataset": dataset, "model": cfg["datasets"][dataset]["arch"],
                                          "seed": seed, "data_dir": cfg["data"]["prepared_dir"]})


def expand(cfg: dict[str, Any], source: str = "config.yaml") -> list[Run]:
    """Every (dataset, variant, seed) run of the grid, each validated as a full run config."""
    runs = []
    for dataset, spec in cfg["datasets"].items():
        for variant in cfg["variants"]:
            for seed in cfg["seeds"]:
                where = f"{source} (datasets.{dataset} x variants.{variant} x seed {seed})"
                rc = run_config.from_dict(run_overrides(cfg, dataset, variant, seed), where)
                runs.append(Run(dataset, spec["arch"], variant, seed, rc))
    return runs
