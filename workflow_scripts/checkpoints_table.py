"""Snakemake adapter: the main table's runs under each kept set of weights (tables/checkpoints.{csv,md})."""

from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from part import grid
from part.checkpoint_table import write_checkpoint_table

with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    paths = write_checkpoint_table(grid.load(snakemake.config, source="workflow config"), snakemake.input.metrics,
                                   Path(snakemake.output.csv).parent)
    print("\n".join(f"wrote {p}" for p in paths.values()))
