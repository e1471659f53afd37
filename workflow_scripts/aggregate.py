"""Snakemake adapter: the main table's tables, the paper beside ours and the claim's verdicts."""

from pathlib import Path

from part.analysis.aggregate import write_tables
from part.base import grid
from part.workflow.joblog import job_log

with job_log(snakemake.log[0], owns=snakemake.output):
    paths = write_tables(grid.load(snakemake.config, source="workflow config"), snakemake.input.metrics,
                         Path(snakemake.output.main_csv).parent)
    print("\n".join(f"wrote {p}" for p in paths.values()))
