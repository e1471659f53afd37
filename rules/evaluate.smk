# A run's evaluation, cut into jobs by evaluation.jobs (part.base.vocabulary.EVAL_JOBS):
#   per_model (the default, one machine): the `metrics` job of a run loads its model and data once, runs
#     every attack of the run and writes eval/<attack>.{json,correct.npz} and metrics.json;
#   per_attack (profiles/slurm): one `evaluate` job per (run, attack) writes that attack's pair of files, so
#     AutoAttack's long tail runs beside the cheap attacks, and the same `metrics` rule only merges them, locally.
# The files and their numbers are the same either way (tests/test_workflow.py). Both read the weights of
# evaluation.checkpoint (model.pt, the final epoch's, by default). The further weights of
# evaluation.compare_checkpoints are evaluated with natural + PGD-20 into metrics_<name>.json, for each
# main-table run: per_model by the run's one evaluation job (`evaluate_checkpoints`, which then also writes
# the run's metrics.json: one process loads torch once for all its weights), per_attack by a job of their
# own beside the per-attack jobs. best.pt and ema.pt are written by the train job before model.pt, so
# model.pt (its declared output) stands for all three.

EVAL_DIR = f"{RUN_DIR}/{rundir.eval_dir_name(GRID.checkpoint)}"
EVAL_THREADS = config["resources"]["evaluate"]["cpus_per_gpu"]


rule evaluate:
    input:
        model=f"{RUN_DIR}/model.pt",
        data=f"{PREPARED}/{{dataset}}.pt",
    output:
        result=f"{EVAL_DIR}/{{attack}}.json",
        correct=f"{EVAL_DIR}/{{attack}}.correct.npz",
    params:
        evaluations=lambda wildcards: {GRID.checkpoint: [wildcards.attack]},
        n_examples=lambda wildcards: {wildcards.attack: GRID.examples(wildcards.attack)},
        batch_size=config["evaluation"].get("batch_size"),
        merge=False,
    conda:
        "../envs/part.yaml"
    log:
        "logs/evaluate/{dataset}/{arch}/{variant}/seed{seed}/{attack}.log",
    threads: EVAL_THREADS
    resources:
        **job_resources("evaluate"),
    script:
        "../workflow_scripts/evaluate.py"


if not PER_MODEL:

    localrules:
        metrics,


rule metrics:
    input:
        unpack(metrics_inputs),
    output:
        f"{RUN_DIR}/{GRID.metrics_name}",
    params:
        evaluations=lambda wildcards: {GRID.checkpoint: list(GRID.attacks[run_of(wildcards).path]) if PER_MODEL else []},
        n_examples=lambda wildcards: {a: GRID.examples(a) for a in GRID.attacks[run_of(wildcards).path]},
        batch_size=config["evaluation"].get("batch_size"),
        merge=True,
    conda:
        "../envs/part.yaml"
    log:
        "logs/metrics/{dataset}/{arch}/{variant}/seed{seed}.log",
    threads: EVAL_THREADS if PER_MODEL else 1
    resources:
        **job_resources("metrics"),
    script:
        "../workflow_scripts/evaluate.py"


# The robustness curve and the gradient-masking checks (evaluation.robustness_curve / evaluation.sanity): one
# job per (run, check) for the runs each block names, into eval/<check>.{json,correct.npz}; never merged.
rule evaluate_check:
    input:
        unpack(check_inputs),
    output:
        result=f"{EVAL_DIR}/{{check}}.json",
        correct=f"{EVAL_DIR}/{{check}}.correct.npz",
    params:
        evaluations=lambda wildcards: {GRID.checkpoint: [wildcards.check]},
        n_examples=lambda wildcards: {wildcards.check: GRID.examples(wildcards.check)},
        checks=lambda wildcards: {wildcards.check: GRID.check_parameters(run_of(wildcards), wildcards.check)},
        batch_size=config["evaluation"].get("batch_size"),
        merge=False,
    conda:
        "../envs/part.yaml"
    log:
        "logs/evaluate_check/{dataset}/{arch}/{variant}/seed{seed}/{check}.log",
    threads: EVAL_THREADS
    resources:
        **job_resources("evaluate_check"),
    script:
        "../workflow_scripts/evaluate.py"


if GRID.compared_checkpoints:

    rule evaluate_checkpoints:
        input:
            model=f"{RUN_DIR}/model.pt",
            data=f"{PREPARED}/{{dataset}}.pt",
        output:
            metrics=[f"{RUN_DIR}/{rundir.metrics_name(weights)}" for weights in KEPT_WEIGHTS],
            results=[f"{RUN_DIR}/{rundir.eval_dir_name(weights)}/{attack}.{ext}"
                     for weights in GRID.compared_checkpoints for attack in COMPARE_ATTACKS
                     for ext in ("json", "correct.npz")],
        wildcard_constraints:
            variant="|".join(sorted({run.variant for run in GRID.main})),
        params:
            evaluations=kept_weights_evaluations,
            n_examples=lambda wildcards: {attack: GRID.examples(attack)
                                          for attacks in kept_weights_evaluations(wildcards).values()
                                          for attack in attacks},
            batch_size=config["evaluation"].get("batch_size"),
            merge=True,
        conda:
            "../envs/part.yaml"
        log:
            "logs/evaluate_checkpoints/{dataset}/{arch}/{variant}/seed{seed}.log",
        threads: EVAL_THREADS
        resources:
            **job_resources("evaluate_checkpoints"),
        script:
            "../workflow_scripts/evaluate.py"

    if PER_MODEL:

        ruleorder: evaluate_checkpoints > metrics
