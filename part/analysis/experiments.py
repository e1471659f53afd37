"""Tables and figures of the experiments beyond the main table (config ``experiments``).

Each experiment (the paper's quadrant proof of concept, the CAM-method comparison, the ε_low and s
sweeps, the release switches) reads the runs of a few variants and writes, under
``results/experiments/NAME/``: ``per_seed.csv`` (long, numeric), ``summary.csv`` (mean / std per
row and column), ``NAME.csv`` + ``NAME.md`` (mean ± std over seeds) and ``NAME.png`` + ``NAME.pdf``.

The reading, the consistency check and the mean ± std are the main table's (``part.analysis.aggregate.collect`` /
``summarise``), with the experiment's rows as the table's rows, so both tables average runs alike.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from part.analysis import aggregate, compare
from part.analysis.plots import PALETTE, apply_style, save_figure
from part.base import files
from part.base.grid import Experiment, Grid, experiment_outputs, x_value
from part.base.rundir import read_log

TIME = "sec_per_epoch"
"""The timing column: a run's mean wall seconds per PART epoch (refresh included), from log.jsonl."""

COLUMNS = {**aggregate.COLUMNS, TIME: "sec / epoch"}
"""Column headers; seconds are "sec", never "s": s is PART's refresh interval (the s sweep's x axis)."""

X_AXES = {"attack.eps_low": ("ε_low (× 1/255)", 255.0), "attack.eps": ("ε (× 1/255)", 255.0),
          "mask.refresh_every": ("s (PART epochs between ε-map refreshes)", 1.0)}
"""How a sweep's x axis is labelled and scaled (budgets read in 1/255 units, as the paper writes them)."""

REFERENCE_DATASET = {"paper_figure1": "cifar10"}
"""The dataset published reference numbers were measured on: only those rows are set beside them."""

QUADRANT_REGION = {"quadrant_ul": "upper_left", "quadrant_ur": "upper_right",
                   "quadrant_bl": "bottom_left", "quadrant_br": "bottom_right"}
"""mask.recipe → the ``low_budget_region`` of paper_figure1.csv."""


def seconds_per_epoch(log: str | Path) -> float:
    """Mean wall seconds of a run's PART epochs (refresh included; all epochs if it has none), from its
    ``log.jsonl``."""
    records = read_log(Path(log).parent)
    part = [r["seconds"] for r in records if r["phase"] == "part"]
    seconds = part or [r["seconds"] for r in records]
    return sum(seconds) / len(seconds)


def collect(grid: Grid, exp: Experiment, metrics: Iterable[str | Path], logs: Iterable[str | Path] = ()) -> pd.DataFrame:
    """Per-seed values of the experiment's columns (its attacks, then the timing from ``logs`` if it
    reports one), with x, from the metrics files ``metrics``."""
    per_seed = aggregate.collect(grid, metrics, grid.experiment_variants(exp.name))
    per_seed = per_seed[per_seed["attack"].isin(exp.attacks)]
    runs = {(r.dataset, r.variant, r.seed): r for r in grid.experiment_runs[exp.name]}
    if exp.timing and not per_seed.empty:
        per_seed = pd.concat([per_seed, _timing_rows(grid, per_seed, logs)], ignore_index=True)
    if exp.x is not None:
        per_seed = per_seed.assign(x=[x_value(runs[k], exp.x) for k in _run_keys(per_seed)])
    return per_seed.reset_index(drop=True)


def _run_keys(frame: pd.DataFrame) -> list[tuple[str, str, int]]:
    return list(zip(frame["dataset"], frame["variant"], frame["seed"]))


def _timing_rows(grid: Grid, per_seed: pd.DataFrame, logs: Iterable[str | Path]) -> pd.DataFrame:
    """One timing row per evaluated run, shaped like an attack's so ``summarise`` averages it too."""
    by_run = {}
    for log in map(Path, logs):
        run = grid.run_at(log)
        by_run[run.dataset, run.variant, run.seed] = log
    first = per_seed.drop_duplicates(["dataset", "variant", "seed"])
    if missing := [k for k in _run_keys(first) if k not in by_run]:
        raise ValueError(f"timing: no log.jsonl given for the runs {missing}; the sec / epoch column reads each one")
    seconds = [seconds_per_epoch(by_run[k]) for k in _run_keys(first)]
    return first.assign(attack=TIME, accuracy=seconds, n_examples=0)


def summarise(per_seed: pd.DataFrame, exp: Experiment) -> pd.DataFrame:
    """Mean ± std over seeds per (dataset, row, column), with x when the experiment is a sweep."""
    summary = aggregate.summarise(per_seed, list(exp.seeds))
    if "x" in per_seed:
        x = per_seed.drop_duplicates(["dataset", "variant"]).set_index(["dataset", "variant"])["x"]
        summary["x"] = [x[k] for k in zip(summary["dataset"], summary["variant"])]
    return summary


def reference_values(exp: Experiment, grid: Grid) -> pd.DataFrame:
    """Published accuracies per (dataset, variant, attack) for rows that have one (may be empty)."""
    columns, rows = ["dataset", "variant", "attack", "paper"], []
    dataset = REFERENCE_DATASET.get(exp.reference)
    if dataset not in exp.datasets:
        return pd.DataFrame(rows, columns=columns)
    paper = compare.load_reference(exp.reference).set_index("low_budget_region")
    runs = {r.variant: r for r in grid.experiment_runs[exp.name] if r.dataset == dataset}
    for row in exp.rows:
        region = QUADRANT_REGION.get(runs[row.variant].config.mask.recipe)
        if region in paper.index:
            rows += [(dataset, row.variant, a, float(paper.loc[region, a])) for a in exp.attacks if a in paper]
    return pd.DataFrame(rows, columns=columns)


def table(summary: pd.DataFrame, exp: Experiment, reference: pd.DataFrame) -> pd.DataFrame:
    """Rows dataset → variant (experiment order), columns: x, the attacks, the paper's, the timing."""
    wide = summary.pivot_table(index=["dataset", "arch", "variant", "label"], columns="attack", values="cell",
                               aggfunc="first").reset_index()
    order = {row.variant: i for i, row in enumerate(exp.rows)}
    wide = wide.sort_values(["dataset", "variant"], key=lambda c: c.map(order) if c.name == "variant" else c)
    leading = ["dataset", "arch", "label"]
    if exp.x is not None:
        label, scale = X_AXES.get(exp.x, (exp.x, 1.0))
        x = summary.drop_duplicates(["dataset", "variant"]).set_index(["dataset", "variant"])["x"]
        wide[label] = [f"{x[k] * scale:g}" for k in zip(wide["dataset"], wide["variant"])]
        leading.insert(2, label)
    columns = [a for a in exp.attacks if a in wide]
    papers = [a for a in columns if a in set(reference["attack"])]
    for attack in papers:
        ref = reference[reference["attack"] == attack].set_index(["dataset", "variant"])["paper"]
        wide[f"paper {attack}"] = [f"{ref[k]:.2f}" if k in ref.index else "" for k in zip(wide["dataset"], wide["variant"])]
    extra = [f"paper {a}" for a in papers] + ([TIME] if TIME in wide else [])
    names = {**COLUMNS, **{f"paper {a}": f"Paper {COLUMNS[a]}" for a in columns}, "label": "method"}
    return wide[leading + columns + extra].rename(columns=names)


def figure(per_seed: pd.DataFrame, exp: Experiment, reference: pd.DataFrame) -> Figure:
    """One row of panels per dataset: the accuracies, then (if asked) the seconds per epoch.

    A sweep gets one line panel per attack (each with its own y range: natural and robust accuracy
    lie tens of points apart, the differences between settings are a point or two); categorical
    variants one panel of bars grouped by attack. Error bars are the sample std over seeds (none
    with one seed); published values, where the experiment has them, are black diamonds.
    """
    datasets = list(dict.fromkeys(per_seed["dataset"]))
    timing = TIME in set(per_seed["attack"])
    accuracy_panels = 1 if exp.x is None else len(exp.attacks)
    ncols = accuracy_panels + timing
    width = (7.0 if exp.x is None else 4.2 * accuracy_panels) + 4.2 * timing
    apply_style()
    fig = Figure(figsize=(width, 3.9 * len(datasets) + 0.6), layout="constrained")
    axes = fig.subplots(len(datasets), ncols, squeeze=False)
    legend: dict[str, Any] = {}  # one legend for the bar panels of every dataset: label -> handle
    for row, dataset in zip(axes, datasets):
        data = per_seed[per_seed["dataset"] == dataset]
        accuracy = data[data["attack"] != TIME].assign(column=lambda d: d["attack"].map(COLUMNS))
        where = f"{dataset} ({data['arch'].iloc[0]})"
        if exp.x is None:
            _bars(row[0], accuracy, exp, reference[reference["dataset"] == dataset])
            row[0].set_title(f"{where}: accuracy")
            legend.update(zip(*reversed(row[0].get_legend_handles_labels())))
        else:
            for ax, attack, colour in zip(row, exp.attacks, sns.color_palette(PALETTE)):
                _lines(ax, accuracy[accuracy["attack"] == attack], exp.x, colour)
                ax.set(title=f"{where}: {COLUMNS[attack]}", ylabel=f"{COLUMNS[attack]} accuracy (%)")
        if timing:
            _timing_panel(row[-1], data[data["attack"] == TIME], exp)
            row[-1].set_title(f"{where}: training time")
    if legend:
        fig.legend(legend.values(), legend.keys(), loc="outside lower center", ncols=len(legend), frameon=False)
    fig.suptitle(textwrap.fill(exp.title, int(10 * width)), fontsize=12)
    return fig


def _labels(exp: Experiment) -> list[str]:
    return [row.label for row in exp.rows]


def _wrap(label: str) -> str:
    return textwrap.fill(label, 16)


def _bars(ax, accuracy: pd.DataFrame, exp: Experiment, reference: pd.DataFrame) -> None:
    order = _labels(exp)
    sns.barplot(accuracy, x="label", y="accuracy", hue="column", order=order, hue_order=[COLUMNS[a] for a in exp.attacks],
                errorbar="sd", capsize=0.15, err_kws={"linewidth": 1.2}, palette=PALETTE, ax=ax)
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", fontsize=8, label_type="center", color="white")
    label_of = {row.variant: row.label for row in exp.rows}
    for container, attack in zip(ax.containers, exp.attacks):
        for _, ref in reference[reference["attack"] == attack].iterrows():
            patch = container.patches[order.index(label_of[ref["variant"]])]
            ax.scatter(patch.get_x() + patch.get_width() / 2, ref["paper"], marker="D", color="black", s=28,
                       zorder=5, label="paper (CIFAR-10)")
    ax.set_xticks(range(len(order)), [_wrap(label) for label in order])
    ax.set(xlabel="", ylabel="accuracy (%)", ylim=(0, 100))
    ax.get_legend().remove()


def _lines(ax, accuracy: pd.DataFrame, x: str, colour) -> None:
    label, scale = X_AXES.get(x, (x, 1.0))
    data = accuracy.assign(x=accuracy["x"] * scale)
    sns.lineplot(data, x="x", y="accuracy", errorbar="sd", err_style="bars", marker="o", color=colour,
                 err_kws={"capsize": 3}, ax=ax)
    _x_axis(ax, sorted(set(data["x"])), label)


def _timing_panel(ax, timing: pd.DataFrame, exp: Experiment) -> None:
    if exp.x is None:
        sns.barplot(timing, x="label", y="accuracy", order=_labels(exp), errorbar="sd", capsize=0.15,
                    color=sns.color_palette(PALETTE)[2], ax=ax)
        ax.bar_label(ax.containers[0], fmt="%.2f", fontsize=8, padding=2)
        ax.set_xticks(range(len(exp.rows)), [_wrap(label) for label in _labels(exp)], fontsize=9)
        ax.set(xlabel="")
    else:
        _lines(ax, timing, exp.x, sns.color_palette(PALETTE)[2])
    ax.set(ylabel="seconds per PART epoch", ylim=(0, 1.15 * timing["accuracy"].max()))


def _x_axis(ax, ticks: list[float], label: str) -> None:
    """Log scale when the sweep spans a decade or more (s = 1 … 20), ticks at the swept values."""
    if ticks[0] > 0 and ticks[-1] / ticks[0] >= 10:
        ax.set_xscale("log")
        ax.minorticks_off()
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xlabel(label)


def write(grid: Grid, name: str, metrics: Iterable[str | Path], logs: Iterable[str | Path] = (),
          out_root: str | Path | None = None) -> dict[str, Path]:
    """Table (CSV, Markdown) and figure (PNG, PDF) of one experiment from its runs' metrics files (and
    logs, for its timing), every file written atomically below ``out_root/experiments/NAME/`` (default: the
    grid's results directory)."""
    if name not in grid.experiments:
        raise KeyError(f"experiments.{name}: no such experiment (configured: {', '.join(grid.experiments) or 'none'})")
    exp = grid.experiments[name]
    per_seed = collect(grid, exp, metrics, logs)
    if per_seed.empty:
        raise ValueError(f"experiments.{name}: no metrics.json given for any of its runs")
    summary = summarise(per_seed, exp)
    reference = reference_values(exp, grid)
    wide = table(summary, exp, reference)
    paths = experiment_outputs(grid.results_dir if out_root is None else out_root, name)
    files.write_text(paths["per_seed"], per_seed.to_csv(index=False))
    files.write_text(paths["summary"], summary.to_csv(index=False, float_format="%.4f"))
    files.write_text(paths["csv"], wide.to_csv(index=False))
    files.write_text(paths["md"], f"# {exp.title}\n\n" + wide.to_markdown(index=False) + _note(exp, per_seed, reference))
    save_figure(figure(per_seed, exp, reference), paths["png"].with_suffix(""))
    return paths


def _note(exp: Experiment, per_seed: pd.DataFrame, reference: pd.DataFrame) -> str:
    accuracy = per_seed[per_seed["attack"] != TIME]
    sizes = aggregate.example_sizes(accuracy)
    lines = [f"Mean ± sample std (ddof = 1) over seeds {list(exp.seeds)}; accuracies in %. Test examples per "
             "column: " + ", ".join(f"{COLUMNS[a]} {sizes[a]}" for a in exp.attacks if a in sizes) + "."]
    if not reference.empty:
        lines.append("Paper: the published values (Figure 1 of the paper, CIFAR-10, ResNet-18, one quadrant at "
                     "6/255 and the other three at 12/255), shown for the rows of that setting.")
    if TIME in set(per_seed["attack"]):
        lines.append("sec / epoch: training wall seconds per PART epoch (ε-map refresh included), from each run's "
                     "log.jsonl, on whatever hardware ran it (see results/README.md).")
    return "\n\n" + "\n".join(lines) + "\n"
