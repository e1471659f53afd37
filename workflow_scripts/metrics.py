"""Snakemake adapter: merge a run's per-attack results into its metrics.json."""

from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from part.results import merge_metrics

with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    merge_metrics(Path(snakemake.output[0]).parent, snakemake.params.weights)
