"""Snakemake adapter: evaluate one run's further weights (best.pt / ema.pt / model.pt) with natural + PGD-20."""

from pathlib import Path

import torch

from part import distributed
from part.evaluate import evaluate
from part.joblog import job_log
from part.vocabulary import COMPARE_ATTACKS

distributed.exit_on_sigterm()  # SLURM stops a job with SIGTERM: its locks are removed
torch.set_num_threads(snakemake.threads)
with job_log(snakemake.log[0]):
    evaluate(Path(snakemake.input.model).parent, COMPARE_ATTACKS, n_examples=snakemake.params.n_examples,
             batch_size=snakemake.params.batch_size, checkpoint=snakemake.params.weights,
             log=lambda line: print(line, flush=True))
