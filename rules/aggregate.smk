# The main table's tables (results/tables/): mean ± std over seeds in the paper's layout (CSV, Markdown,
# LaTeX), the paper's numbers beside ours, and the paper's claim judged family by family.
# The file names are part.base.grid.TABLE_FILES, which part.analysis.aggregate writes (table_files in common.smk).


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
        script:
            "../workflow_scripts/checkpoints_table.py"


# The robustness curve's and the evaluation checks' tables, each only where its block is set.
CHECK_TABLES = [str(path) for check in GRID.checks for path in grid.check_table_outputs(RESULTS, check).values()]


for check in GRID.checks:
    block = grid.CHECK_BLOCKS[check]
    outputs = grid.check_table_outputs(RESULTS, check)

    rule:
        name:
            f"{block}_table"
        input:
            results=[str(GRID.check_result(run, check)) for run in GRID.check_runs(check)],
            runs=run_files(GRID.check_runs(check), "run.json"),
        output:
            csv=report(str(outputs[f"{check}_csv"]), caption=f"../report/{block}.rst", category="Evaluation checks"),
            md=str(outputs[f"{check}_md"]),
        params:
            check=check,
        localrule: True
        conda:
            "../envs/part.yaml"
        log:
            f"logs/{block}_table.log",
        script:
            "../workflow_scripts/checks_table.py"
