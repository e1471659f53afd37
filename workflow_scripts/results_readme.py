"""Snakemake adapter: results/README.md (grid, recorded versions and hardware, compute from the jobs' logs)."""


from part.grid import compute_resource, job_resources
from part.joblog import job_log
from part.report import write_results_readme

cfg = snakemake.config


def gpus(rule, dataset):
    """GPUs a job of ``rule`` on ``dataset`` asked for; none for a job on the host."""
    resource = compute_resource(cfg, rule)
    return job_resources(cfg, resource, dataset)["gpu"] if resource else 0


with job_log(snakemake.log[0]):
    path = write_results_readme(cfg, cfg["results_dir"], "logs", gpus, snakemake.output[0])
    print(f"wrote {path}")
