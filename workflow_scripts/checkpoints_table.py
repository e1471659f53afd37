"""Snakemake adapter: the main table's runs under each kept set of weights (tables/checkpoints.{csv,md})."""

from pathlib import Path

from part.analysis.checkpoint_table import write_checkpoint_table
from part.base import grid
from part.workflow.joblog import job_log

with job_log(snakemake.log[0], owns=snakemake.output):
    paths = write_checkpoint_table(grid.load(snakemake.config, source="workflow config"), snakemake.input.metrics,
                                   Path(snakemake.output.csv).parent)
    print("\n".join(f"wrote {p}" for p in paths.values()))
