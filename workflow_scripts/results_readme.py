"""Snakemake adapter: results/README.md (grid, recorded versions and hardware, compute from benchmark files)."""

from contextlib import redirect_stderr, redirect_stdout

from part.grid import job_resources
from part.report import write_results_readme

cfg = snakemake.config
with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    path = write_results_readme(cfg, cfg["results_dir"], "logs",
                                lambda stage, dataset: job_resources(cfg, stage, dataset)["gpu"],
                                snakemake.output[0])
    print(f"wrote {path}")
