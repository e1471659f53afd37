# Helpers shared by the rules: the validated grid and the paths of its outputs.

from part import grid

grid.validate(config, source="workflow config")
# Every run any target reads (main table + experiments), once each; the main table's alone feed its tables.
RUNS = grid.all_runs(config, source="workflow config")
MAIN_RUNS = [run.path for run in grid.expand(config, source="workflow config")]
RUN_ATTACKS = grid.run_attacks(config, source="workflow config")
EXPERIMENTS = grid.experiments(config, source="workflow config")
RESULTS = config["results_dir"]
PREPARED = config["data"]["prepared_dir"]
ATTACKS = config["evaluation"]["attacks"]
RUN_DIR = f"{RESULTS}/{{dataset}}/{{arch}}/{{variant}}/seed{{seed}}"


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    variant="|".join(sorted({run.variant for run in RUNS.values()})),
    seed=r"\d+",
    attack="|".join(ATTACKS),


def run_of(wildcards):
    """The grid cell a job's wildcards name."""
    return RUNS[f"{wildcards.dataset}/{wildcards.arch}/{wildcards.variant}/seed{wildcards.seed}"]


def run_dirs():
    """The main table's run directories (experiments list their own, see rules/experiments.smk)."""
    return [f"{RESULTS}/{path}" for path in MAIN_RUNS]


def run_eval_results(wildcards):
    """A run's per-attack results: every attack of every table that reads the run."""
    run = run_of(wildcards)
    return [f"{RESULTS}/{run.path}/eval/{attack}.json" for attack in RUN_ATTACKS[run.path]]


def n_examples(wildcards):
    """Test examples an evaluation job uses: AutoAttack may run on a subset (evaluation.aa_n_examples)."""
    if wildcards.attack == "aa" and config["evaluation"].get("aa_n_examples"):
        return config["evaluation"]["aa_n_examples"]
    return config["evaluation"].get("n_examples")


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
