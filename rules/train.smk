# One training job per (dataset, arch, variant, seed). A job killed mid-run (time limit,
# preemption) leaves its checkpoint; the retry resumes from it.


rule train:
    input:
        PREPARED + "/{dataset}.pt",
    output:
        model=RUN_DIR + "/model.pt",
        run=RUN_DIR + "/run.json",
    params:
        run=lambda wildcards: run_of(wildcards).config.to_dict(),
    log:
        "logs/train/{dataset}/{arch}/{variant}/seed{seed}.log",
    benchmark:
        "logs/train/{dataset}/{arch}/{variant}/seed{seed}.benchmark.tsv"
    threads: config["resources"]["train"]["cpus_per_gpu"]
    resources:
        **job_resources("train"),
    script:
        "../workflow_scripts/train.py"
