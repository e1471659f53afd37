"""Snakemake adapter: the robustness curve's or the evaluation checks' table (params.check) from the runs' results."""

from pathlib import Path

from part.analysis.curve_table import write_curve_table, write_sanity_table
from part.base import grid
from part.workflow.joblog import job_log

write = write_curve_table if snakemake.params.check == "curve" else write_sanity_table
with job_log(snakemake.log[0], owns=snakemake.output):
    paths = write(grid.load(snakemake.config, source="workflow config"), snakemake.input.results,
                  Path(snakemake.output.csv).parent)
    print("\n".join(f"wrote {p}" for p in paths.values()))
