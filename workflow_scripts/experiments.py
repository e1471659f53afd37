"""Snakemake adapter: one experiment's table and figure."""


from part.analysis.experiments import write
from part.base import grid
from part.workflow.joblog import job_log

with job_log(snakemake.log[0], owns=snakemake.output):
    paths = write(grid.load(snakemake.config, source="workflow config"), snakemake.params.experiment,
                  snakemake.input.metrics, snakemake.input.logs)
    print("\n".join(f"wrote {p}" for p in paths.values()))
