"""Snakemake adapter: the main table's tables, the paper beside ours and the claim's verdicts."""

from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from part import grid
from part.aggregate import write_tables

with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    paths = write_tables(grid.load(snakemake.config, source="workflow config"), snakemake.input.metrics,
                         Path(snakemake.output.main_csv).parent)
    print("\n".join(f"wrote {p}" for p in paths.values()))
