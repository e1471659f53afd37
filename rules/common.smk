# Helpers shared by the rules: the grid, built and validated once per parse, and the paths of its outputs.
# Nothing here imports torch, matplotlib or pandas (tests/test_workflow.py checks): every SLURM job
# parses this again.

import compileall
from pathlib import Path

import part
from part.base import grid, rundir
from part.base.config import read_yaml
from part.base.vocabulary import CHECKS, COMPARE_ATTACKS

# Snakemake's own reader keeps the last of a key given twice; the config files are read again as part reads them.
for configfile_path in workflow.configfiles:
    read_yaml(configfile_path, "workflow config")
GRID = grid.load(config, source="workflow config")
RESULTS = config["results_dir"]
PREPARED = config["data"]["prepared_dir"]
ATTACKS = config["evaluation"]["attacks"]
RUN_DIR = f"{RESULTS}/{grid.RUN_PATH}"
PER_MODEL = GRID.eval_jobs == "per_model"


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    variant="|".join(sorted({run.variant for run in GRID.runs.values()})),
    seed=r"\d+",
    attack="|".join(ATTACKS),
    check="|".join(CHECKS),


def compile_package():
    """Byte-compile part/ once for every job to come. Where bytecode is not written (PYTHONDONTWRITEBYTECODE, a
    read-only install) each job's interpreter would otherwise compile the whole package again (0.3-0.5 CPU-s a job on
    a 2-core machine)."""
    compileall.compile_dir(Path(part.__file__).parent, quiet=2)


def run_of(wildcards):
    """The grid cell a job's wildcards name."""
    return GRID.runs[grid.RUN_PATH.format(**wildcards)]


def run_files(runs, name):
    """One file (``metrics.json``, ``run.json``, ``log.jsonl``) of each of ``runs``."""
    return [f"{RESULTS}/{run.path}/{name}" for run in runs]


def run_wildcards(run):
    """The wildcards of a run's jobs."""
    return {"dataset": run.dataset, "arch": run.arch, "variant": run.variant, "seed": run.seed}


def outputs_per_run(rule, runs):
    """Every output ``rule`` declares, for each of ``runs`` (and, where a path names an attack, for each
    attack the run is evaluated with)."""
    return [pattern.format(**run_wildcards(run), attack=attack) for run in runs for pattern in rule.output
            for attack in (GRID.attacks[run.path] if "{attack}" in pattern else [None])]


def every_output():
    """Every file a rule of the grid declares, for `rule all` (called once every rule file is included).

    Snakemake rebuilds a missing file only when a job that needs to run asks for it: a table deleted
    behind a finished README would otherwise never come back. Named here, each is a target of its own.
    """
    per_run = [rules.train, rules.metrics, *([] if PER_MODEL else [rules.evaluate])]
    compared = [rules.evaluate_checkpoints] if GRID.compared_checkpoints else []
    checks = [pattern.format(**run_wildcards(run), check=check) for check in GRID.checks
              for run in GRID.check_runs(check) for pattern in rules.evaluate_check.output]
    return [*(rules.prepare_dataset.output[0].format(dataset=d) for d in GRID.datasets),
            *(path for rule in per_run for path in outputs_per_run(rule, GRID.runs.values())),
            *(path for rule in compared for path in outputs_per_run(rule, GRID.main)), *checks,
            *rules.aggregate.output, *CHECKPOINT_TABLES, *CHECK_TABLES, *FIGURE_OUTPUTS, *all_experiment_outputs(),
            *rules.results_readme.output]


def run_eval_results(wildcards):
    """A run's per-attack results (of the tables' checkpoint): every attack of every table that reads the run."""
    run = run_of(wildcards)
    eval_dir = rundir.eval_dir_name(GRID.checkpoint)
    return [f"{RESULTS}/{run.path}/{eval_dir}/{attack}.json" for attack in GRID.attacks[run.path]]


def metrics_inputs(wildcards):
    """A `metrics` job's inputs: the model and data it evaluates (per_model), or the per-attack jobs' results
    it merges (per_attack)."""
    inputs = {"model": f"{RESULTS}/{run_of(wildcards).path}/model.pt"}
    if PER_MODEL:
        return {**inputs, "data": f"{PREPARED}/{wildcards.dataset}.pt"}
    return {**inputs, "results": run_eval_results(wildcards)}


KEPT_WEIGHTS = ((GRID.checkpoint,) if PER_MODEL else ()) + GRID.compared_checkpoints
"""The weights an `evaluate_checkpoints` job evaluates: the compared ones and, where a run's evaluation is one job
(per_model), the tables' too."""


def kept_weights_evaluations(wildcards):
    """Each of KEPT_WEIGHTS with its attacks: the run's table attacks for the tables' weights, natural + PGD-20 for
    the compared ones."""
    table = GRID.attacks[run_of(wildcards).path]
    return {weights: list(table if weights == GRID.checkpoint else COMPARE_ATTACKS) for weights in KEPT_WEIGHTS}


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


def job_resources(rule):
    """The scheduler resources of a job of `rule`: those of its `resources` key (part.base.grid.compute_resource, the
    one home of which rules compute), resolved per dataset by part.base.grid.job_resources; none for a job on the host."""
    stage = grid.compute_resource(config, rule)
    if stage is None:
        return {}

    def of_job(key):
        return lambda wildcards: grid.job_resources(config, stage, wildcards.dataset)[key]

    return {key: of_job(key) for key in ("nodes", "gpu", "cpus_per_gpu", "mem_mb", "runtime")}
