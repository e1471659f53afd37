# One evaluation job per (model, attack), so AutoAttack (the slow one) runs beside the others;
# a local merge job then builds each run's metrics.json. Both use the weights of evaluation.checkpoint
# (the final epoch's, model.pt, by default). Each further weights of evaluation.compare_checkpoints gets
# one job per main-table run: natural + PGD-20, merged into metrics_<name>.json. best.pt and ema.pt are
# written by the train job before model.pt, so model.pt (its declared output) stands for all three.


rule evaluate:
    input:
        model=f"{RUN_DIR}/model.pt",
        data=f"{PREPARED}/{{dataset}}.pt",
    output:
        result=f"{RUN_DIR}/{rundir.eval_dir_name(GRID.checkpoint)}/{{attack}}.json",
        correct=f"{RUN_DIR}/{rundir.eval_dir_name(GRID.checkpoint)}/{{attack}}.correct.npz",
    params:
        weights=GRID.checkpoint,
        n_examples=n_examples,
        batch_size=config["evaluation"].get("batch_size"),
    conda:
        "../envs/part.yaml"
    log:
        "logs/evaluate/{dataset}/{arch}/{variant}/seed{seed}/{attack}.log",
    benchmark:
        "logs/evaluate/{dataset}/{arch}/{variant}/seed{seed}/{attack}.benchmark.tsv"
    threads: config["resources"]["evaluate"]["cpus_per_gpu"]
    resources:
        **job_resources("evaluate"),
    script:
        "../workflow_scripts/evaluate.py"


localrules:
    metrics,


rule metrics:
    input:
        run_eval_results,
    output:
        f"{RUN_DIR}/{GRID.metrics_name}",
    params:
        weights=GRID.checkpoint,
    conda:
        "../envs/part.yaml"
    log:
        "logs/metrics/{dataset}/{arch}/{variant}/seed{seed}.log",
    benchmark:
        "logs/metrics/{dataset}/{arch}/{variant}/seed{seed}.benchmark.tsv"
    script:
        "../workflow_scripts/metrics.py"


for weights in GRID.compared_checkpoints:

    rule:
        name:
            f"evaluate_{weights}"
        input:
            model=f"{RUN_DIR}/model.pt",
            data=f"{PREPARED}/{{dataset}}.pt",
        output:
            metrics=f"{RUN_DIR}/{rundir.metrics_name(weights)}",
            results=[f"{RUN_DIR}/{rundir.eval_dir_name(weights)}/{attack}.{ext}"
                     for attack in COMPARE_ATTACKS for ext in ("json", "correct.npz")],
        params:
            weights=weights,
            n_examples=config["evaluation"].get("n_examples"),
            batch_size=config["evaluation"].get("batch_size"),
        conda:
            "../envs/part.yaml"
        log:
            f"logs/evaluate_{weights}/{{dataset}}/{{arch}}/{{variant}}/seed{{seed}}.log",
        benchmark:
            f"logs/evaluate_{weights}/{{dataset}}/{{arch}}/{{variant}}/seed{{seed}}.benchmark.tsv"
        threads: config["resources"]["evaluate"]["cpus_per_gpu"]
        resources:
            **job_resources("evaluate"),
        script:
            "../workflow_scripts/evaluate_checkpoint.py"
