"""``results/README.md``: what a workflow run produced, with which software, on which hardware, at what cost.

A results directory gets copied, archived and handed to co-authors without the logs or the checkout it
came from; this file travels with it. It restates the grid, the versions and devices the runs recorded
(``run.json`` / ``eval/<attack>.json``, not the machine that happens to write the summary), the compute the jobs
used (the cost line that ends every job's log: ``part.joblog``) and links every table and figure.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from part import files, provenance
from part.grid import CHECK_TABLE_FILES, curve_figure_stem
from part.joblog import job_cost


def job_costs(logs_dir: str | Path) -> pd.DataFrame:
    """One row per finished job: its stage (rule), dataset (when the log path names one), wall and CPU seconds.

    Jobs log to ``logs/<stage>/<dataset>/.../<job>.log`` (the layout of ``rules/*.smk``) and end their log with
    their cost (``part.joblog.job_cost``); a log without one is a job still running or killed before its end.
    """
    logs_dir = Path(logs_dir)
    rows = []
    for path in sorted(logs_dir.rglob("*.log")):
        cost = job_cost(path.read_text(errors="replace"))
        if cost is None:
            continue
        parts = path.relative_to(logs_dir).parts
        rows.append({"stage": parts[0].removesuffix(".log"), "dataset": parts[1] if len(parts) > 2 else None,
                     "job": "/".join(parts)[: -len(".log")], "seconds": cost[1], "cpu_seconds": cost[0]})
    return pd.DataFrame(rows, columns=["stage", "dataset", "job", "seconds", "cpu_seconds"])


def compute_summary(costs: pd.DataFrame, gpus: Callable[[str, str], int]) -> pd.DataFrame:
    """Jobs, wall hours and GPU-hours per stage; ``gpus(stage, dataset)`` is what each job requested (0 for a
    job on the host: ``part.grid.compute_resource``)."""
    costs = costs.assign(gpu_hours=[
        s / 3600 * gpus(stage, ds)
        for stage, ds, s in zip(costs["stage"], costs["dataset"], costs["seconds"])])
    table = costs.groupby("stage", sort=False).agg(jobs=("job", "count"), wall_hours=("seconds", "sum"),
                                                   gpu_hours=("gpu_hours", "sum"))
    table["wall_hours"] /= 3600
    table.loc["total"] = table.sum()
    table["jobs"] = table["jobs"].astype(int)
    return table.reset_index()


def recorded_environments(results_dir: str | Path) -> pd.DataFrame:
    """Distinct (device, CUDA, torch, package version, git revision) the runs and evaluations recorded:
    the files of the jobs that computed (``run.json``, ``eval/<attack>.json``), not of the merges."""
    rows = []
    for name, pattern in (("run.json", "run.json"), ("eval/*.json", "eval/*.json")):
        for path in Path(results_dir).rglob(pattern):
            env = json.loads(path.read_text()).get("environment") or {}
            versions = env.get("versions") or {}
            rows.append({"device": env.get("device_name") or "?", "torch CUDA build": str(env.get("cuda") or "-"),
                         "torch": versions.get("torch"), "part-repro": versions.get("part-repro"),
                         "git revision": env.get("git_revision"), "python": env.get("python"),
                         "files": name})
    frame = pd.DataFrame(rows, columns=["device", "torch CUDA build", "torch", "part-repro", "git revision", "python", "files"])
    keys = [c for c in frame.columns if c != "files"]
    return (frame.fillna("-").groupby(keys, sort=False)["files"]
            .agg(lambda f: ", ".join(f"{n} × {k}" for k, n in f.value_counts().items())).reset_index())


def _grid_lines(cfg: dict[str, Any]) -> list[str]:
    datasets = ", ".join(f"{d} ({spec['arch']})" for d, spec in cfg["datasets"].items())
    variants = ", ".join(v["label"] for v in cfg["variants"].values())
    lines = [f"* datasets: {datasets}", f"* main-table variants: {variants}",
             f"* seeds: {', '.join(map(str, cfg['seeds']))}",
             f"* attacks: {', '.join(cfg['evaluation']['attacks'])} (AutoAttack on "
             f"{cfg['evaluation'].get('aa_n_examples') or 'all'} test examples)"]
    for name, exp in (cfg.get("experiments") or {}).items():
        lines.append(f"* experiment `{name}`: {exp.get('title', name)}")
    return lines


def _links(results_dir: Path) -> list[str]:
    lines = []
    for sub in ("tables", "figures", "experiments"):
        files = sorted(p for p in (results_dir / sub).rglob("*") if p.is_file() and p.suffix in (".md", ".csv", ".tex", ".png", ".pdf"))
        if files:
            lines.append(f"\n### {sub}\n")
            lines += [f"* [{p.relative_to(results_dir)}]({p.relative_to(results_dir)})" for p in files]
    return lines


def checks_section(results_dir: str | Path) -> list[str]:
    """The README's Markdown for the evaluation checks and the robustness curve, where they were produced:
    ``tables/sanity.md`` inline (under this section's title), the curve table linked, each dataset's curve figure
    (``figures/robustness_curve_<dataset>.png``) shown. Empty when neither exists."""
    results_dir = Path(results_dir)
    tables = results_dir / "tables"
    sanity, curve = tables / CHECK_TABLE_FILES["sanity_md"], tables / CHECK_TABLE_FILES["curve_md"]
    figures = sorted((results_dir / "figures").glob(f"{curve_figure_stem('*')}.png"))
    lines = []
    if sanity.is_file():
        body = sanity.read_text().strip().partition("\n")[2].strip()  # its own title becomes the section's
        lines += ["## Evaluation checks: convergence and gradient masking", "", body, ""]
    if curve.is_file() or figures:
        lines += ["## Robustness curve", ""]
        if curve.is_file():
            lines += [f"Accuracy against ℓ∞ PGD per ε, with intervals and PART − base verdicts: "
                      f"[{curve.relative_to(results_dir)}]({curve.relative_to(results_dir)}).", ""]
        lines += [f"![{p.stem}]({p.relative_to(results_dir)})" for p in figures] + ([""] if figures else [])
    return lines


def results_readme(cfg: dict[str, Any], results_dir: str | Path, logs_dir: str | Path,
                   gpus: Callable[[str, str], int]) -> str:
    """The Markdown text of ``results/README.md`` (links relative to the results directory)."""
    results_dir = Path(results_dir)
    main = results_dir / "tables" / "main.md"
    compute = compute_summary(job_costs(logs_dir), gpus)
    parts = [
        "# Reproduction results: PART (Pixel-reweighted Adversarial Training, ICML 2024)", "",
        f"Written by `part.report` at git revision `{provenance.git_revision() or 'unknown'}`. "
        "The HTML report (`snakemake --report results/report.html`) holds the same tables and figures with captions.",
        "", "## Grid", "", *_grid_lines(cfg), "",
        "## Main table", "", main.read_text().strip() if main.is_file() else "(not produced)", "",
        *checks_section(results_dir),
        "## Software and hardware recorded by the runs", "",
        recorded_environments(results_dir).to_markdown(index=False), "",
        "## Compute (from the jobs' logs)", "",
        "GPU-hours = wall time × GPUs requested per job (`resources` of the config); 0 for CPU-only grids.", "",
        compute.to_markdown(index=False, floatfmt=".3f"), "",
        "## Files", *_links(results_dir), "",
        "<details><summary>The workflow config</summary>", "", "```yaml",
        yaml.safe_dump(cfg, sort_keys=False).strip(), "```", "</details>", ""]
    return "\n".join(parts)


def write_results_readme(cfg: dict[str, Any], results_dir: str | Path, logs_dir: str | Path,
                         gpus: Callable[[str, str], int], out: str | Path) -> Path:
    return files.write_text(out, results_readme(cfg, results_dir, logs_dir, gpus))
