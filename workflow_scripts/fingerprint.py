"""Snakemake adapter: results/.fingerprint, the sources that made every output of the grid (part.workflow.fingerprint)."""

from part.workflow.fingerprint import write_fingerprint
from part.workflow.joblog import job_log

with job_log(snakemake.log[0], owns=snakemake.output):
    path = write_fingerprint(snakemake.output[0], snakemake.input, snakemake.params.sources)
    print(f"wrote {path}: {path.read_text().strip()}")
