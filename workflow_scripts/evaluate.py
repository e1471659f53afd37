"""Snakemake adapter: evaluate one trained run under one attack (eval/<attack>.json + .correct.npz)."""

from pathlib import Path

import torch

from part import distributed
from part.evaluate import evaluate
from part.joblog import job_log

distributed.exit_on_sigterm()  # SLURM stops a job with SIGTERM: its locks are removed
torch.set_num_threads(snakemake.threads)
with job_log(snakemake.log[0]):
    evaluate(Path(snakemake.input.model).parent, [snakemake.wildcards.attack], n_examples=snakemake.params.n_examples,
             batch_size=snakemake.params.batch_size, merge=False, checkpoint=snakemake.params.weights, log=lambda line: print(line, flush=True))
