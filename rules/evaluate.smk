# One evaluation job per (model, attack), so AutoAttack (the slow one) runs beside the others;
# a local merge job then builds each run's metrics.json.


rule evaluate:
    input:
        model=f"{RUN_DIR}/model.pt",
        data=f"{PREPARED}/{{dataset}}.pt",
    output:
        result=f"{RUN_DIR}/eval/{{attack}}.json",
        correct=f"{RUN_DIR}/eval/{{attack}}.correct.npz",
    params:
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
        f"{RUN_DIR}/metrics.json",
    conda:
        "../envs/part.yaml"
    log:
        "logs/metrics/{dataset}/{arch}/{variant}/seed{seed}.log",
    benchmark:
        "logs/metrics/{dataset}/{arch}/{variant}/seed{seed}.benchmark.tsv"
    script:
        "../workflow_scripts/metrics.py"
