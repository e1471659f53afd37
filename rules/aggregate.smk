# Mean ± std over seeds for the whole grid, in the paper's layout.


localrules:
    aggregate,


rule aggregate:
    input:
        [f"{run_dir}/metrics.json" for run_dir in run_dirs()],
    output:
        per_seed=f"{RESULTS}/tables/per_seed.csv",
        summary=f"{RESULTS}/tables/summary.csv",
        main_csv=f"{RESULTS}/tables/main.csv",
        main_md=f"{RESULTS}/tables/main.md",
    conda:
        "../envs/part.yaml"
    log:
        "logs/aggregate.log",
    benchmark:
        "logs/aggregate.benchmark.tsv"
    script:
        "../workflow_scripts/aggregate.py"
