# One table + figure per entry of `experiments` (results/experiments/NAME/): the quadrant proof of
# concept, the CAM-method comparison, the ε_low and s sweeps, the release switches. Their runs are
# built by the train/evaluate/metrics rules like the main table's (GRID.runs holds both).


def experiment_inputs(exp):
    """The metrics and run.json of every run the experiment reads, plus each log.jsonl when it reports timing."""
    runs = GRID.experiment_runs[exp.name]
    logs = run_files(runs, "log.jsonl") if exp.timing else []
    return {"metrics": run_files(runs, GRID.metrics_name), "runs": run_files(runs, "run.json"), "logs": logs}


def experiment_files(exp):
    """The experiment's outputs; its table and figure go into the HTML report under its own subcategory."""
    files = {key: str(path) for key, path in grid.experiment_outputs(RESULTS, exp.name).items()}
    for key in ("csv", "png"):
        files[key] = report(files[key], caption="../report/experiment.rst", category="Experiments",
                            subcategory=exp.title, labels={"experiment": exp.name, "file": key})
    return files


def all_experiment_outputs():
    """Every experiment's files (targets of `rule all`)."""
    return [str(path) for name in GRID.experiments for path in grid.experiment_outputs(RESULTS, name).values()]


for exp in GRID.experiments.values():

    rule:
        name:
            f"experiment_{exp.name}"
        input:
            **experiment_inputs(exp),
        output:
            **experiment_files(exp),
        params:
            experiment=exp.name,
        localrule: True
        conda:
            "../envs/part.yaml"
        log:
            f"logs/experiments/{exp.name}.log",
        script:
            "../workflow_scripts/experiments.py"
