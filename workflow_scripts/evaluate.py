"""Snakemake adapter: evaluate one trained run under one attack (eval/<attack>.json + .correct.npz)."""

from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch

from part import distributed
from part.evaluate import evaluate

distributed.exit_on_sigterm()  # SLURM stops a job with SIGTERM: its locks are removed
torch.set_num_threads(snakemake.threads)
with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    evaluate(Path(snakemake.input.model).parent, [snakemake.wildcards.attack], n_examples=snakemake.params.n_examples,
             batch_size=snakemake.params.batch_size, merge=False, checkpoint=snakemake.params.weights, log=lambda line: print(line, flush=True))
