# Dataset download + preparation: one local job per dataset (compute nodes often have no internet).


localrules:
    prepare_dataset,


rule prepare_dataset:
    output:
        f"{PREPARED}/{{dataset}}.pt",
    params:
        raw_dir=config["data"]["raw_dir"],
        mirror=config["data"].get("mirror"),
    conda:
        "../envs/part.yaml"
    log:
        "logs/prepare/{dataset}.log",
    script:
        "../workflow_scripts/prepare.py"
