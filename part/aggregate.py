"""From the grid's ``metrics.json`` files to mean ± std tables over seeds.

One row per (dataset, arch, variant, attack); the standard deviation is the sample standard
deviation over seeds (ddof = 1, as papers' "mean ± std" over a handful of runs usually is), and
every row says how many seeds it averages and which are missing, so a table built from an
incomplete grid says so instead of silently averaging fewer runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from part import io
from part.grid import expand

COLUMNS = {"natural": "Natural", "pgd20": "PGD-20", "mma": "MMA", "aa": "AA", "mm3": "MM3", "worst_case": "Worst case"}


def collect(cfg: dict[str, Any]) -> pd.DataFrame:
    """Long table of per-seed accuracies (%) for every run of the grid whose metrics exist."""
    rows = []
    for run in expand(cfg):
        path = Path(cfg["results_dir"]) / run.path / "metrics.json"
        if not path.is_file():
            continue
        metrics = json.loads(path.read_text())
        recorded = metrics["run"]
        expected = {"dataset": run.dataset, "model": run.arch, "method": run.config.method, "seed": run.seed}
        if {k: recorded[k] for k in expected} != expected:
            raise ValueError(f"{path}: records run {recorded}, but the grid puts {expected} here")
        variant = cfg["variants"][run.variant]
        base = {"dataset": run.dataset, "arch": run.arch, "variant": run.variant, "label": variant["label"],
                "family": variant["family"], "seed": run.seed}
        for attack, entry in metrics["attacks"].items():
            rows.append({**base, "attack": attack, "accuracy": entry["accuracy"], "n_examples": entry["n_examples"]})
        worst = metrics["worst_case"]
        rows.append({**base, "attack": "worst_case", "accuracy": worst["accuracy"], "n_examples": worst["n_examples"]})
    return pd.DataFrame(rows, columns=["dataset", "arch", "variant", "label", "family", "seed", "attack",
                                       "accuracy", "n_examples"])


def summarise(per_seed: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """Mean ± std over seeds per (dataset, arch, variant, attack), with the seeds that are missing."""
    keys = ["dataset", "arch", "variant", "label", "family", "attack"]
    grouped = per_seed.groupby(keys, sort=False)
    out = grouped["accuracy"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    present = grouped["seed"].agg(lambda s: set(s)).reset_index(drop=True)
    out["missing_seeds"] = [" ".join(str(s) for s in seeds if s not in p) for p in present]
    out["cell"] = [_cell(m, s, n) for m, s, n in zip(out["mean"], out["std"], out["n_seeds"])]
    return out


def _cell(mean: float, std: float, n: int) -> str:
    return f"{mean:.2f}" if n < 2 else f"{mean:.2f} ± {std:.2f}"


def wide(summary: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """The paper's layout: rows dataset → variant (config order), columns the attacks."""
    table = summary.pivot_table(index=["dataset", "arch", "variant", "label"], columns="attack", values="cell",
                                aggfunc="first")
    order = {v: i for i, v in enumerate(variants)}
    table = table.reset_index().sort_values(["dataset", "variant"], key=lambda c: c.map(order) if c.name == "variant" else c)
    attacks = [a for a in COLUMNS if a in table.columns]
    return table[["dataset", "arch", "label", *attacks]].rename(columns={**COLUMNS, "label": "method"})


def write_tables(cfg: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """``summary.csv`` (long, numeric) and ``main.csv`` / ``main.md`` (the paper's layout)."""
    out_dir = Path(out_dir)
    per_seed = collect(cfg)
    if per_seed.empty:
        raise ValueError(f"{cfg['results_dir']}: no metrics.json found for any run of the grid")
    summary = summarise(per_seed, cfg["seeds"])
    table = wide(summary, list(cfg["variants"]))
    paths = {"per_seed": out_dir / "per_seed.csv", "summary": out_dir / "summary.csv",
             "main_csv": out_dir / "main.csv", "main_md": out_dir / "main.md"}
    io.write_text(paths["per_seed"], per_seed.to_csv(index=False))
    io.write_text(paths["summary"], summary.to_csv(index=False, float_format="%.4f"))
    io.write_text(paths["main_csv"], table.to_csv(index=False))
    sizes = per_seed.groupby("attack", sort=False)["n_examples"].agg(lambda n: "/".join(map(str, sorted(set(n)))))
    note = (f"\n\nMean ± sample std (ddof = 1) over seeds {cfg['seeds']}; accuracies in %. "
            "MMA = the PART release's minimum-margin variant; AA = standard AutoAttack. "
            "Test examples per column (the first N of the test split; the worst case uses those all attacks saw): "
            + ", ".join(f"{COLUMNS[a]} {sizes[a]}" for a in COLUMNS if a in sizes) + ".\n")
    io.write_text(paths["main_md"], table.to_markdown(index=False) + note)
    return paths
