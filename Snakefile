# PART reproduction workflow: dataset download -> training -> evaluation -> tables.
#   snakemake --cores all                                  # the paper's grid (config.yaml)
#   snakemake --cores 2 --configfile configs/demo.yaml     # the embedded digits demo
# A --configfile replaces config.yaml entirely (its grid is not merged into the paper's); --config KEY=VALUE
# (a profile's `config:`) sets keys over either, e.g. --config 'evaluation={jobs: per_attack}'.

from snakemake.utils import min_version

min_version("9.0")


if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/aggregate.smk"
include: "rules/figures.smk"
include: "rules/experiments.smk"
include: "rules/report.smk"


onstart:
    compile_package()


# Every declared output is a target of its own (rules/common.smk: every_output), so the plain command
# rebuilds any missing or stale one; the fingerprint of the sources that made them comes last.
rule all:
    input:
        every_output(),
        rules.fingerprint.output,
    default_target: True
