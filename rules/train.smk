# One training job per (dataset, arch, variant, seed). A job killed mid-run (time limit,
# preemption) leaves its checkpoint; the retry resumes from it.


rule train:
    input:
        f"{PREPARED}/{{dataset}}.pt",
    output:
        model=f"{RUN_DIR}/model.pt",
        run=f"{RUN_DIR}/run.json",
        log=f"{RUN_DIR}/log.jsonl",
    params:
        run=lambda wildcards: run_of(wildcards).config.to_dict(),
    conda:
        "../envs/part.yaml"
    log:
        "logs/train/{dataset}/{arch}/{variant}/seed{seed}.log",
    threads: config["resources"]["train"]["cpus_per_gpu"]
    resources:
        **job_resources("train"),
    script:
        "../workflow_scripts/train.py"
