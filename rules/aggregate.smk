# The main table's tables (results/tables/): mean ± std over seeds in the paper's layout (CSV, Markdown,
# LaTeX), the paper's numbers beside ours, and the paper's claim judged family by family.
# The file names are part.grid.TABLE_FILES, which part.aggregate writes (table_files in common.smk).


localrules:
    aggregate,


rule aggregate:
    input:
        metrics=run_files(GRID.main, "metrics.json"),
        runs=run_files(GRID.main, "run.json"),
    output:
        **table_files(),
    conda:
        "../envs/part.yaml"
    log:
        "logs/aggregate.log",
    benchmark:
        "logs/aggregate.benchmark.tsv"
    script:
        "../workflow_scripts/aggregate.py"
