# The main grid's figures (results/figures/): accuracy-robustness trade-off, the claim's PART − base
# differences with their intervals, training curves and CAM / ε-map gallery per dataset, share of
# pixels at full ε per epoch. All local: they read tables and logs; the gallery runs one model
# forward + backward on 4 test images (CPU, seconds).

FIGURES = f"{RESULTS}/figures"

# Every figure file of the grid (targets of `rule all`).
FIGURE_OUTPUTS = [f"{FIGURES}/{stem}.{ext}" for stem in GRID.figure_stems() for ext in ("png", "pdf")]


localrules:
    figure_tradeoff,
    figure_training_curves,
    figure_eps_share,
    figure_validation,
    figure_gallery,
    figure_claim,


rule figure_tradeoff:
    input:
        per_seed=rules.aggregate.output.per_seed,
    output:
        png=report(f"{FIGURES}/tradeoff.png", category="Figures"),
        pdf=f"{FIGURES}/tradeoff.pdf",
    params:
        kind="tradeoff",
    conda:
        "../envs/part.yaml"
    log:
        "logs/figures/tradeoff.log",
    script:
        "../workflow_scripts/figures.py"


rule figure_training_curves:
    input:
        lambda wildcards: run_files(GRID.main_runs(wildcards.dataset), "log.jsonl"),
    output:
        png=report(f"{FIGURES}/training_curves_{{dataset}}.png", category="Figures"),
        pdf=f"{FIGURES}/training_curves_{{dataset}}.pdf",
    params:
        kind="training_curves",
    conda:
        "../envs/part.yaml"
    log:
        "logs/figures/training_curves_{dataset}.log",
    script:
        "../workflow_scripts/figures.py"


rule figure_validation:
    input:
        lambda wildcards: run_files(GRID.main_runs(wildcards.dataset), "log.jsonl"),
    output:
        png=report(f"{FIGURES}/validation_{{dataset}}.png", caption="../report/validation.rst", category="Figures"),
        pdf=f"{FIGURES}/validation_{{dataset}}.pdf",
    params:
        kind="validation",
    conda:
        "../envs/part.yaml"
    log:
        "logs/figures/validation_{dataset}.log",
    script:
        "../workflow_scripts/figures.py"


rule figure_eps_share:
    input:
        run_files([run for run in GRID.main if run.config.pixel_reweighted], "log.jsonl"),
    output:
        png=report(f"{FIGURES}/eps_share.png", category="Figures"),
        pdf=f"{FIGURES}/eps_share.pdf",
    params:
        kind="eps_share",
    conda:
        "../envs/part.yaml"
    log:
        "logs/figures/eps_share.log",
    script:
        "../workflow_scripts/figures.py"


rule figure_gallery:
    input:
        model=lambda wildcards: f"{RESULTS}/{GRID.gallery_run(wildcards.dataset).path}/model.pt",
        data=f"{PREPARED}/{{dataset}}.pt",
    output:
        png=report(f"{FIGURES}/gallery_{{dataset}}.png", category="Figures"),
        pdf=f"{FIGURES}/gallery_{{dataset}}.pdf",
    params:
        kind="gallery",
    conda:
        "../envs/part.yaml"
    log:
        "logs/figures/gallery_{dataset}.log",
    script:
        "../workflow_scripts/figures.py"


rule figure_claim:
    input:
        verdicts=rules.aggregate.output.verdicts_csv,
    output:
        png=report(f"{FIGURES}/claim.png", caption="../report/claim.rst", category="Figures"),
        pdf=f"{FIGURES}/claim.pdf",
    params:
        kind="claim",
    conda:
        "../envs/part.yaml"
    log:
        "logs/figures/claim.log",
    script:
        "../workflow_scripts/figures.py"


if "curve" in GRID.checks:

    localrules:
        figure_robustness_curve,

    rule figure_robustness_curve:
        input:
            curve=str(grid.check_table_outputs(RESULTS, "curve")["curve_csv"]),
        output:
            png=report(f"{FIGURES}/{grid.curve_figure_stem('{dataset}')}.png",
                       caption="../report/robustness_curve_figure.rst", category="Figures"),
            pdf=f"{FIGURES}/{grid.curve_figure_stem('{dataset}')}.pdf",
        params:
            kind="robustness_curve",
        conda:
            "../envs/part.yaml"
        log:
            "logs/figures/robustness_curve_{dataset}.log",
        script:
            "../workflow_scripts/figures.py"
