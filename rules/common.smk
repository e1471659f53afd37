# Helpers shared by the rules: the validated grid and the paths of its outputs.

from part import grid

grid.validate(config, source="workflow config")
RUNS = {run.path: run for run in grid.expand(config)}
RESULTS = config["results_dir"]
PREPARED = config["data"]["prepared_dir"]
ATTACKS = config["evaluation"]["attacks"]
RUN_DIR = f"{RESULTS}/{{dataset}}/{{arch}}/{{variant}}/seed{{seed}}"


wildcard_constraints:
    dataset="|".join(config["datasets"]),
    variant="|".join(config["variants"]),
    seed=r"\d+",
    attack="|".join(ATTACKS),


def run_of(wildcards):
    """The grid cell a job's wildcards name."""
    return RUNS[f"{wildcards.dataset}/{wildcards.arch}/{wildcards.variant}/seed{wildcards.seed}"]


def run_dirs():
    return [f"{RESULTS}/{path}" for path in RUNS]


def n_examples(wildcards):
    """Test examples an evaluation job uses: AutoAttack may run on a subset (evaluation.aa_n_examples)."""
    if wildcards.attack == "aa" and config["evaluation"].get("aa_n_examples"):
        return config["evaluation"]["aa_n_examples"]
    return config["evaluation"].get("n_examples")


def job_resources(stage):
    spec = config["resources"][stage]
    return {"gpu": spec["gpu"], "cpus_per_gpu": spec["cpus_per_gpu"], "mem_mb": spec["mem_mb"], "runtime": spec["runtime"]}
