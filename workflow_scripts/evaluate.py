"""Snakemake adapter of every evaluation rule (rules/evaluate.smk): run the job's attacks (or check, with its
parameters) on each of its weights (``params.evaluations``: weights -> attacks) and, with ``merge``, write the
run's metrics file of those weights. A `metrics` job of ``evaluation.jobs: per_attack`` has no attacks of its
own: it merges the per-attack jobs' results and, importing no torch, stays a fraction of a second on the
submitting node."""

from pathlib import Path

from part.evaluation.results import merge_metrics
from part.workflow.joblog import job_log

params = snakemake.params
run_dir = Path(snakemake.input.model).parent


def evaluate_all():
    import torch

    from part.base.grid import compute_resource
    from part.base.runtime import job_gpus
    from part.evaluation.evaluate import evaluate
    from part.training import distributed

    distributed.exit_on_sigterm()  # SLURM stops a job with SIGTERM: its locks, GPU slots and temporaries are removed
    torch.set_num_threads(snakemake.threads)
    # its own GPUs, or refused where torch sees fewer than it asks for
    with job_gpus(snakemake, compute_resource(snakemake.config, snakemake.rule)):
        for checkpoint, attacks in params.evaluations.items():
            evaluate(run_dir, attacks, n_examples=params.n_examples, batch_size=params.batch_size,
                     merge=params.merge, checkpoint=checkpoint, log=lambda line: print(line, flush=True),
                     **getattr(params, "checks", {}))


with job_log(snakemake.log[0]):
    if any(params.evaluations.values()):
        evaluate_all()
    else:
        for checkpoint in params.evaluations:
            merge_metrics(run_dir, checkpoint)
