"""Snakemake adapter: download (or take from the mirror) and prepare one dataset."""

from pathlib import Path

from part.data.sources import fetch_and_prepare
from part.workflow.joblog import job_log

with job_log(snakemake.log[0]):
    dataset = snakemake.wildcards.dataset
    fetch_and_prepare(dataset, Path(snakemake.params.raw_dir) / dataset, snakemake.output[0],
                      mirror=snakemake.params.mirror)
