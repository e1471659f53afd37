"""Snakemake adapter: train one run (resuming from its checkpoint if a previous attempt was killed)."""

from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch

from part.config import from_dict
from part.train import train

torch.set_num_threads(snakemake.threads)
with open(snakemake.log[0], "a") as log, redirect_stdout(log), redirect_stderr(log):
    cfg = from_dict(snakemake.params.run, source=f"rule train ({snakemake.output.model})")
    train(cfg, Path(snakemake.output.model).parent, log=lambda line: print(line, flush=True))
