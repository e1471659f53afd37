"""Snakemake adapter: one figure of the main grid (params.kind), via part.plots."""

from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pandas as pd

from part import plots

cfg = snakemake.config
kind = snakemake.params.kind
stem = Path(snakemake.output.png).with_suffix("")
with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    if kind == "tradeoff":
        paths = plots.plot_tradeoff(pd.read_csv(snakemake.input.per_seed), cfg["variants"], stem)
    elif kind == "claim":
        paths = plots.plot_claim(pd.read_csv(snakemake.input.verdicts), cfg["variants"], stem)
    elif kind == "training_curves":
        logs = plots.collect_logs(cfg, snakemake.wildcards.dataset)
        paths = plots.plot_training_curves(logs, cfg["variants"], stem)
    elif kind == "eps_share":
        paths = plots.plot_eps_share(plots.collect_logs(cfg), cfg["variants"], stem)
    else:
        run = plots.gallery_run(cfg, snakemake.wildcards.dataset)
        label = cfg["variants"][run.variant]["label"]
        paths = plots.plot_gallery(Path(snakemake.input.model).parent, stem, label=label,
                                   data_dir=Path(snakemake.input.data).parent)
    print("\n".join(f"wrote {p}" for p in paths))
