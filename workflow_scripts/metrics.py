"""Snakemake adapter: merge a run's per-attack results into its metrics.json."""

from pathlib import Path

from part.joblog import job_log
from part.results import merge_metrics

with job_log(snakemake.log[0]):
    merge_metrics(Path(snakemake.output[0]).parent, snakemake.params.weights)
