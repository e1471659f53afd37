# The main table's tables (results/tables/): mean ± std over seeds in the paper's layout (CSV, Markdown,
# LaTeX), the paper's numbers beside ours, and the paper's claim judged family by family.
# The file names are part.grid.TABLE_FILES, which part.aggregate writes (table_files in common.smk).


localrules:
    aggregate,


rule aggregate:
    input:
        metrics=run_files(GRID.main, GRID.metrics_name),
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


# Best-vs-last (and EMA): only when evaluation.compare_checkpoints names weights besides the tables' own.
CHECKPOINT_TABLES = [str(path) for path in grid.checkpoint_table_outputs(RESULTS).values()] if GRID.compared_checkpoints else []


if GRID.compared_checkpoints:

    localrules:
        checkpoints_table,

    rule checkpoints_table:
        input:
            metrics=[path for weights in (GRID.checkpoint, *GRID.compared_checkpoints)
                     for path in run_files(GRID.main, rundir.metrics_name(weights))],
            runs=run_files(GRID.main, "run.json"),
        output:
            csv=report(CHECKPOINT_TABLES[0], caption="../report/checkpoints.rst", category="Main table"),
            md=CHECKPOINT_TABLES[1],
        conda:
            "../envs/part.yaml"
        log:
            "logs/checkpoints_table.log",
        benchmark:
            "logs/checkpoints_table.benchmark.tsv"
        script:
            "../workflow_scripts/checkpoints_table.py"
