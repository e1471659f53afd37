# One table + figure per entry of `experiments` (results/experiments/NAME/): the quadrant proof of
# concept, the CAM-method comparison, the ε_low and s sweeps, the release switches. Their runs are
# built by the train/evaluate/metrics rules like the main table's (RUNS in common.smk holds both).


def experiment_inputs(exp):
    """The metrics of every run the experiment reads, plus each run.json when it reports timing."""
    runs = grid.experiment_runs(config, exp, source="workflow config")
    files = [f"{RESULTS}/{run.path}/metrics.json" for run in runs]
    return files + ([f"{RESULTS}/{run.path}/run.json" for run in runs] if exp.timing else [])


def experiment_files(exp):
    """The experiment's outputs; its table and figure go into the HTML report under its own subcategory."""
    files = {key: str(path) for key, path in grid.experiment_outputs(RESULTS, exp.name).items()}
    for key in ("csv", "png"):
        files[key] = report(files[key], caption="../report/experiment.rst", category="Experiments",
                            subcategory=exp.title, labels={"experiment": exp.name, "file": key})
    return files


def all_experiment_outputs():
    """Every experiment's files (targets of `rule all`)."""
    return [str(path) for name in EXPERIMENTS for path in grid.experiment_outputs(RESULTS, name).values()]


for exp in EXPERIMENTS.values():

    rule:
        name:
            f"experiment_{exp.name}"
        input:
            experiment_inputs(exp),
        output:
            **experiment_files(exp),
        params:
            experiment=exp.name,
        localrule: True
        conda:
            "../envs/part.yaml"
        log:
            f"logs/experiments/{exp.name}.log",
        benchmark:
            f"logs/experiments/{exp.name}.benchmark.tsv"
        script:
            "../workflow_scripts/experiments.py"
