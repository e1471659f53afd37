"""Snakemake adapter: one experiment's table and figure."""

from contextlib import redirect_stderr, redirect_stdout

from part import grid
from part.experiments import write

with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    paths = write(grid.load(snakemake.config, source="workflow config"), snakemake.params.experiment,
                  snakemake.input.metrics, snakemake.input.logs)
    print("\n".join(f"wrote {p}" for p in paths.values()))
