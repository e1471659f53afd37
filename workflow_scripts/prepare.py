"""Snakemake adapter: download (or take from the mirror) and prepare one dataset."""

from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from part.sources import fetch_and_prepare

with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    dataset = snakemake.wildcards.dataset
    fetch_and_prepare(dataset, Path(snakemake.params.raw_dir) / dataset, snakemake.output[0],
                      mirror=snakemake.params.mirror)
