"""Snakemake adapter: results/README.md (grid, recorded versions and hardware, compute from benchmark files)."""


from part.grid import job_resources
from part.joblog import job_log
from part.report import write_results_readme

cfg = snakemake.config
with job_log(snakemake.log[0]):
    path = write_results_readme(cfg, cfg["results_dir"], "logs",
                                lambda stage, dataset: job_resources(cfg, stage, dataset)["gpu"],
                                snakemake.output[0])
    print(f"wrote {path}")
