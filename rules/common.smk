# Helpers shared by the rules: the grid, built and validated once per parse, and the paths of its outputs.
# Nothing here imports torch, matplotlib or pandas (tests/test_workflow.py checks): every SLURM job
# parses this again.

from part import grid, rundir
from part.vocabulary import CHECKS, COMPARE_ATTACKS

GRID = grid.load(config, source="workflow config")
RESULTS = config["results_dir"]
PREPARED = config["data"]["prepared_dir"]
ATTACKS = config["evaluation"]["attacks"]
RUN_DIR = f"{RESULTS}/{grid.RUN_PATH}"


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    variant="|".join(sorted({run.variant for run in GRID.runs.values()})),
    seed=r"\d+",
    attack="|".join(ATTACKS),
    check="|".join(CHECKS),


def run_of(wildcards):
    """The grid cell a job's wildcards name."""
    return GRID.runs[grid.RUN_PATH.format(**wildcards)]


def run_files(runs, name):
    """One file (``metrics.json``, ``run.json``, ``log.jsonl``) of each of ``runs``."""
    return [f"{RESULTS}/{run.path}/{name}" for run in runs]


def run_eval_results(wildcards):
    """A run's per-attack results (of the tables' checkpoint): every attack of every table that reads the run."""
    run = run_of(wildcards)
    eval_dir = rundir.eval_dir_name(GRID.checkpoint)
    return [f"{RESULTS}/{run.path}/{eval_dir}/{attack}.json" for attack in GRID.attacks[run.path]]


def metrics_inputs(wildcards):
    """A `metrics` job's inputs: the model and data it evaluates (per_model), or the per-attack jobs' results
    it merges (per_attack)."""
    inputs = {"model": f"{RESULTS}/{run_of(wildcards).path}/model.pt"}
    if GRID.eval_jobs == "per_model":
        return {**inputs, "data": f"{PREPARED}/{wildcards.dataset}.pt"}
    return {**inputs, "results": run_eval_results(wildcards)}


def check_inputs(wildcards):
    """An evaluation check's inputs: the run's model and data and, for the sanity check's transfer attack,
    the model of the same variant's next seed."""
    run = run_of(wildcards)
    inputs = {"model": f"{RESULTS}/{run.path}/model.pt", "data": f"{PREPARED}/{wildcards.dataset}.pt"}
    if wildcards.check == "sanity" and (source := GRID.transfer_source(run)) is not None:
        inputs["source"] = f"{RESULTS}/{source.path}/model.pt"
    return inputs


def table_files():
    """The main table's files; the table, the comparison and the verdicts go into the HTML report."""
    files = {key: str(path) for key, path in grid.table_outputs(RESULTS).items()}
    for key, caption in (("main_csv", "main_table"), ("paper_csv", "paper_vs_reproduction"),
                         ("verdicts_csv", "claim_verdicts")):
        files[key] = report(files[key], caption=f"../report/{caption}.rst", category="Main table")
    return files


def job_resources(stage):
    """A job's scheduler resources, resolved per dataset by part.grid.job_resources."""

    def of_job(key):
        return lambda wildcards: grid.job_resources(config, stage, wildcards.dataset)[key]

    return {key: of_job(key) for key in ("nodes", "gpu", "cpus_per_gpu", "mem_mb", "runtime")}
