"""``results/README.md``: what a workflow run produced, with which software, on which hardware, at what cost.

A results directory gets copied, archived and handed to co-authors without the logs or the checkout it
came from; this file travels with it. It restates the grid, the versions and devices the runs recorded
(``run.json`` / ``eval/<attack>.json``, not the machine that happens to write the summary), the compute the jobs
used (the cost line that ends every job's log: ``part.workflow.joblog``), links every table and figure and gives the
command that builds the HTML report of these results.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from part.base import files, provenance
from part.base.grid import CHECK_TABLE_FILES, Grid, Run, curve_figure_stem
from part.workflow.joblog import job_cost


def job_costs(logs_dir: str | Path) -> pd.DataFrame:
    """One row per finished job: its stage (rule), dataset (when the log path names one), wall and CPU seconds.

    Jobs log to ``logs/<stage>/<dataset>/.../<job>.log`` (the layout of ``rules/*.smk``) and end their log with
    their cost (``part.workflow.joblog.job_cost``); a log without one is a job still running or killed before its end.
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
    job on the host: ``part.base.grid.compute_resource``)."""
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


def _shown(path: str | Path, cwd: Path) -> str:
    """``path`` as a user types it in ``cwd``: relative when it lies below, absolute otherwise."""
    path = Path(path).absolute()
    return os.path.relpath(path, cwd) if path.is_relative_to(cwd) else str(path)


def report_command(snakemake: str | Path, snakefile: str | Path, configfiles: Sequence[str | Path],
                   config_args: Sequence[str], html: str, cwd: str | Path) -> str:
    """The shell command, run in ``cwd`` (the workflow's directory), that builds the HTML report of its results.

    ``snakemake --report`` rebuilds the workflow's DAG to find the files, so it needs the Snakefile, the config
    files and the ``--config`` settings the workflow ran with: without ``--configfile`` it reads config.yaml's
    grid, whose outputs a demo never made, and fails. ``--config`` comes last, as it takes every word after it.
    """
    cwd = Path(cwd).absolute()
    program = _shown(snakemake, cwd) if Path(snakemake).is_absolute() else str(snakemake)  # a bare name: $PATH's
    args = [program, "--report", html]
    if Path(snakefile).absolute() != cwd / "Snakefile":
        args += ["--snakefile", _shown(snakefile, cwd)]
    for configfile in configfiles:
        args += ["--configfile", _shown(configfile, cwd)]
    if config_args:
        args += ["--config", *config_args]
    return shlex.join(args)


def refresh_count(run: Run) -> int:
    """How many times a run computes its ε-maps (``RunConfig.refreshes_at``'s schedule; 0 for a plain method)."""
    return sum(run.config.refreshes_at(epoch) for epoch in range(run.config.epochs))


def refresh_lines(g: Grid) -> list[str]:
    """How often each PART variant of the main table computes its ε-maps, per dataset, from its run config.

    A label "s = 10" reads as "refreshed every 10 epochs"; over fewer PART epochs than s the maps are computed
    once, before the first PART epoch, and kept: a different method from the paper's s = 10 over 60 epochs.
    """
    lines = []
    for dataset in g.datasets:
        first: dict[str, Run] = {}  # a variant's seeds share their schedule
        for run in g.main_runs(dataset):
            first.setdefault(run.variant, run)
        groups: dict[tuple[int, int, int], list[str]] = {}
        for variant, run in first.items():
            if run.config.pixel_reweighted:
                c = run.config
                key = (c.mask.refresh_every, c.epochs - c.warmup_epochs, refresh_count(run))
                groups.setdefault(key, []).append(g.variants[variant].label)
        parts = [f"s = {s} over {n_part} PART epochs: "
                 + ("computed once, before the first PART epoch" if count == 1 else f"computed {count} times")
                 + f" ({', '.join(labels)})" for (s, n_part, count), labels in groups.items()]
        if parts:
            lines.append(f"* ε-maps on {dataset}: " + "; ".join(parts))
    return lines


def _grid_lines(g: Grid) -> list[str]:
    cfg = g.cfg
    datasets = ", ".join(f"{d} ({spec['arch']})" for d, spec in cfg["datasets"].items())
    variants = ", ".join(v["label"] for v in cfg["variants"].values())
    lines = [f"* datasets: {datasets}", f"* main-table variants: {variants}", *refresh_lines(g),
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


def results_readme(g: Grid, results_dir: str | Path, logs_dir: str | Path, gpus: Callable[[str, str], int],
                   command: str) -> str:
    """The Markdown text of ``results/README.md`` (links relative to the results directory); ``command`` builds
    the HTML report (:func:`report_command`)."""
    results_dir, cfg = Path(results_dir), g.cfg
    main = results_dir / "tables" / "main.md"
    compute = compute_summary(job_costs(logs_dir), gpus)
    parts = [
        "# Reproduction results: PART (Pixel-reweighted Adversarial Training, ICML 2024)", "",
        f"Written by `part.workflow.report` at git revision `{provenance.git_revision() or 'unknown'}`. "
        "The HTML report holds the same tables and figures with captions; build it in the directory the workflow "
        "ran in with the Snakefile and config it ran with:", "", "```bash", command, "```",
        "", "## Grid", "", *_grid_lines(g), "",
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


def write_results_readme(g: Grid, results_dir: str | Path, logs_dir: str | Path, gpus: Callable[[str, str], int],
                         command: str, out: str | Path) -> Path:
    return files.write_text(out, results_readme(g, results_dir, logs_dir, gpus, command))
