# The main table's tables (results/tables/): mean ± std over seeds in the paper's layout (CSV, Markdown,
# LaTeX), the paper's numbers beside ours, and the paper's claim judged family by family.
# The file names are part.aggregate.OUTPUTS (the script checks that both agree).


localrules:
    aggregate,


rule aggregate:
    input:
        [f"{run_dir}/metrics.json" for run_dir in run_dirs()],
    output:
        per_seed=f"{RESULTS}/tables/per_seed.csv",
        summary=f"{RESULTS}/tables/summary.csv",
        main_csv=report(f"{RESULTS}/tables/main.csv", caption="../report/main_table.rst", category="Main table"),
        main_md=f"{RESULTS}/tables/main.md",
        main_tex=f"{RESULTS}/tables/main.tex",
        paper_csv=report(f"{RESULTS}/tables/paper_vs_reproduction.csv", caption="../report/paper_vs_reproduction.rst",
                         category="Main table"),
        paper_md=f"{RESULTS}/tables/paper_vs_reproduction.md",
        verdicts_csv=report(f"{RESULTS}/tables/claim_verdicts.csv", caption="../report/claim_verdicts.rst",
                            category="Main table"),
        verdicts_md=f"{RESULTS}/tables/claim_verdicts.md",
    conda:
        "../envs/part.yaml"
    log:
        "logs/aggregate.log",
    benchmark:
        "logs/aggregate.benchmark.tsv"
    script:
        "../workflow_scripts/aggregate.py"
