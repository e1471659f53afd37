"""Snakemake adapter: one figure of the main grid (params.kind), via part.analysis.plots / part.analysis.gallery."""

from pathlib import Path

import pandas as pd

from part.analysis import plots
from part.base import grid
from part.workflow.joblog import job_log

kind = snakemake.params.kind
stem = Path(snakemake.output.png).with_suffix("")
with job_log(snakemake.log[0], owns=snakemake.output):
    g = grid.load(snakemake.config, source="workflow config")
    if kind == "tradeoff":
        paths = plots.plot_tradeoff(pd.read_csv(snakemake.input.per_seed), g.variants, stem)
    elif kind == "claim":
        paths = plots.plot_claim(pd.read_csv(snakemake.input.verdicts), g.variants, stem)
    elif kind == "training_curves":
        paths = plots.plot_training_curves(plots.collect_logs(g, snakemake.input), g.variants, stem)
    elif kind == "validation":
        paths = plots.plot_validation_curves(plots.collect_logs(g, snakemake.input), g.variants, stem)
    elif kind == "robustness_curve":
        table = pd.read_csv(snakemake.input.curve)
        paths = plots.plot_curve(table[table["dataset"] == snakemake.wildcards.dataset], g.variants, stem)
    elif kind == "eps_share":
        paths = plots.plot_eps_share(plots.collect_logs(g, snakemake.input), g.variants, stem)
    else:
        from part.analysis.gallery import plot_gallery  # the one figure that runs a model (torch)

        run = g.gallery_run(snakemake.wildcards.dataset)
        paths = plot_gallery(Path(snakemake.input.model).parent, stem, label=g.variants[run.variant].label,
                             data_dir=Path(snakemake.input.data).parent)
    print("\n".join(f"wrote {p}" for p in paths))
