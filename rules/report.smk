# results/README.md: the run's summary (grid, recorded versions and hardware, compute from the cost line
# that ends every job's log). It is written after every table and figure it links; `snakemake --report` builds the HTML.
# Then results/.fingerprint records which sources made every output (part.workflow.fingerprint; `make check-demo` reads it).


localrules:
    results_readme,
    fingerprint,


rule results_readme:
    input:
        rules.aggregate.output,
        FIGURE_OUTPUTS,
        CHECKPOINT_TABLES,
        CHECK_TABLES,
        all_experiment_outputs(),
    output:
        report(f"{RESULTS}/README.md", caption="../report/results_readme.rst", category="Summary"),
    params:
        # what `snakemake --report` needs to find these results again: the Snakefile and config they were made with
        snakefile=workflow.main_snakefile,
        configfiles=[str(path) for path in workflow.overwrite_configfiles],
        config_args=list(workflow.config_settings.config_args or []),
    conda:
        "../envs/part.yaml"
    log:
        "logs/results_readme.log",
    script:
        "../workflow_scripts/results_readme.py"


rule fingerprint:
    input:
        every_output(),
    output:
        f"{RESULTS}/.fingerprint",
    params:
        sources=workflow.basedir,
    conda:
        "../envs/part.yaml"
    log:
        "logs/fingerprint.log",
    script:
        "../workflow_scripts/fingerprint.py"
