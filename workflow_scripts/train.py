"""Snakemake adapter: train one run (resuming from its checkpoint if a previous attempt was killed).

With more than one GPU for the job (``resources.train.gpu``, or the dataset's ``resources.train.gpu``) the
run is trained by one process per GPU, launched by torchrun (see part.training.distributed); otherwise here. A job
that asks for GPUs gets its own (part.base.gpus) and is refused where torch sees fewer (part.base.runtime.job_gpus).
"""

import os
import subprocess
from pathlib import Path

import torch

from part.base import files
from part.base.config import from_dict
from part.base.grid import compute_resource
from part.base.rundir import RunPaths
from part.base.runtime import job_gpus
from part.training import distributed
from part.training.train import train
from part.workflow.joblog import job_log

distributed.exit_on_sigterm()  # SLURM stops a job with SIGTERM: close the log, stop torchrun, exit 143


def train_with_torchrun(cfg, out_dir, gpus, log):
    """``part train`` in ``gpus`` processes; on SIGTERM or Ctrl-C here, torchrun is told to stop its workers."""
    config_path = files.write_json(RunPaths(out_dir).config, cfg.to_dict())  # the file train writes, written early
    env = {**os.environ, "OMP_NUM_THREADS": str(snakemake.threads)}  # torchrun's default would be 1 thread
    log.flush()
    proc = subprocess.Popen(distributed.torchrun_command(gpus, config_path, out_dir), stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    try:
        returncode = proc.wait()
    finally:
        if proc.poll() is None:
            proc.terminate()  # torchrun passes SIGTERM on to its workers and waits for them
            proc.wait()
    if returncode:
        raise RuntimeError(f"torchrun ({gpus} processes) failed with exit code {returncode}; see the lines above")


torch.set_num_threads(snakemake.threads)
with job_log(snakemake.log[0], "a") as log, job_gpus(snakemake, compute_resource(snakemake.config, snakemake.rule)):
    cfg = from_dict(snakemake.params.run, source=f"rule train ({snakemake.output.model})")
    out_dir = Path(snakemake.output.model).parent
    if snakemake.resources.gpu > 1:
        train_with_torchrun(cfg, out_dir, snakemake.resources.gpu, log)
    else:
        train(cfg, out_dir, log=lambda line: print(line, flush=True))
