"""Snakemake adapter: results/README.md (grid, recorded versions and hardware, compute from the jobs' logs, the
command that builds the HTML report)."""

import sys
from pathlib import Path

from part.base import grid
from part.base.grid import compute_resource, job_resources
from part.workflow.joblog import job_log
from part.workflow.report import report_command, write_results_readme

cfg = snakemake.config


def gpus(rule, dataset):
    """GPUs a job of ``rule`` on ``dataset`` asked for; none for a job on the host."""
    resource = compute_resource(cfg, rule)
    return job_resources(cfg, resource, dataset)["gpu"] if resource else 0


with job_log(snakemake.log[0], owns=snakemake.output):
    program = Path(sys.executable).parent / "snakemake"  # the Snakemake of the environment that runs this workflow
    command = report_command(program if program.is_file() else "snakemake", snakemake.params.snakefile,
                             snakemake.params.configfiles, snakemake.params.config_args,
                             f"{cfg['results_dir']}/report.html", Path.cwd())
    path = write_results_readme(grid.load(cfg, source="workflow config"), cfg["results_dir"], "logs", gpus, command,
                                snakemake.output[0])
    print(f"wrote {path}")
