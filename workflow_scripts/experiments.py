"""Snakemake adapter: one experiment's table and figure."""

from contextlib import redirect_stderr, redirect_stdout

from part.experiments import write

with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    paths = write(snakemake.config, snakemake.params.experiment)
    print("\n".join(f"wrote {p}" for p in paths.values()))
