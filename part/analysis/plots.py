"""The pipeline's figures from its tables and logs: trade-off, the claim's differences, training curves,
ε-map statistics (the CAM / ε-map gallery, which runs a model, is :mod:`part.analysis.gallery`).

Every figure is built on a bare :class:`~matplotlib.figure.Figure` with an Agg canvas, never through
``pyplot``: no global figure registry to leak from a long workflow process, no display needed on a
cluster's login node. Each ``*_figure`` function returns the Figure (so tests can inspect what is
drawn); each ``plot_*`` function draws it and writes ``<stem>.png`` (150 dpi) and ``<stem>.pdf``
atomically, returning both paths.

One style for every figure of the project — this module's and the experiments' — so a family looks
the same everywhere: :func:`apply_style` (seaborn theme), :func:`family_palette` (AT / TRADES / MART
keep their colours whatever else is plotted) and :func:`variant_styles` (a base method in its family's
colour, its PART variants in darker shades with their own marker and line style).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from part.analysis.tablefmt import COLUMNS
from part.base import files
from part.base.grid import Grid, Variant
from part.base.rundir import read_log

DPI = 150
FAMILY_ORDER = ("AT", "TRADES", "MART")
"""The paper's families, which always get the first three colours of the palette, in this order."""
PALETTE = "colorblind"
_MARKERS = ("^", "s", "D", "v", "P", "X", "<", ">")
_LINESTYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))
_SHADES = (0.3, 0.55, 0.15, 0.45, 0.65, 0.25)
"""How far each non-base variant of a family is blended toward black, in config order."""

CURVE_METRICS = {"loss": "training loss", "train_acc": "train accuracy (%)\non its training AEs"}
"""log.jsonl fields the training-curve figure plots, with their axis labels. ``train_acc`` is measured on
the logits the outer loss returns, i.e. on the (pixel-reweighted) adversarial examples of the epoch."""


# ---------------------------------------------------------------------------------------------
# Shared style


def apply_style() -> None:
    """The seaborn theme of every figure of the project; idempotent, call before drawing."""
    sns.set_theme(context="paper", style="whitegrid", palette=PALETTE, font_scale=1.1,
                  rc={"axes.titleweight": "bold", "legend.frameon": False, "savefig.dpi": DPI})


def family_palette(families: Iterable[str] = ()) -> dict[str, tuple[float, float, float]]:
    """Colour of each family: AT, TRADES, MART fixed, any other family by sorted name after them.

    The colours depend only on the set of extra families, never on which runs a figure happens
    to plot, so one family is one colour across all figures of a grid.
    """
    names = list(FAMILY_ORDER) + sorted(set(families) - set(FAMILY_ORDER))
    colours = sns.color_palette(PALETTE, max(len(names), 10))
    return {name: tuple(colours[i % len(colours)]) for i, name in enumerate(names)}


@dataclass(frozen=True)
class VariantStyle:
    """How one method variant is drawn: its family's colour (a shade of it for PART variants)."""
    variant: Variant
    colour: tuple[float, float, float]
    marker: str
    linestyle: Any

    @property
    def label(self) -> str:
        return self.variant.label

    @property
    def family(self) -> str:
        return self.variant.family


def variant_styles(variants: Mapping[str, Variant]) -> dict[str, VariantStyle]:
    """Style of every variant (a grid's ``variants``: label, family, the method its runs train), in order.

    Base methods get the family colour, a circle and a solid line; the family's other variants,
    in config order, get darker shades and their own markers and dash patterns.
    """
    palette = family_palette(v.family for v in variants.values())
    styles, rank = {}, {}
    for name, v in variants.items():
        colour = palette[v.family]
        if v.is_base:
            styles[name] = VariantStyle(v, colour, "o", "-")
            continue
        k = rank[v.family] = rank.get(v.family, -1) + 1
        shade = _SHADES[k % len(_SHADES)]
        styles[name] = VariantStyle(v, tuple(c * (1 - shade) for c in colour), _MARKERS[k % len(_MARKERS)],
                                    _LINESTYLES[k % len(_LINESTYLES)])
    return styles


def new_figure(**kwargs: Any) -> Figure:
    """A Figure with an Agg canvas and constrained layout, outside pyplot's registry."""
    fig = Figure(layout="constrained", **kwargs)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``, each atomically; PDFs carry no timestamp."""
    stem = Path(stem)
    paths = []
    for fmt in ("png", "pdf"):
        meta = {"CreationDate": None} if fmt == "pdf" else {}
        paths.append(files.atomic_write(stem.with_suffix(f".{fmt}"), lambda tmp, fmt=fmt, meta=meta: fig.savefig(
            tmp, format=fmt, dpi=DPI, bbox_inches="tight", metadata=meta)))
    return paths


def _legend_right(fig: Figure, styles: Iterable[VariantStyle], line: bool = False, marker: bool = True,
                  hollow: Mapping[str, float] | None = None) -> None:
    """One legend for the whole figure, outside every panel, in config order; ``hollow`` (variant name → marker
    size) draws the markers as the figure does, as outlines of those sizes."""
    handles = []
    for s in styles:
        look = ({"markersize": hollow[s.variant.name], "markerfacecolor": "none", "markeredgewidth": HOLLOW_EDGE}
                if hollow else {"markersize": 7})
        handles.append(Line2D([], [], color=s.colour, marker=s.marker if marker else None,
                              linestyle=s.linestyle if line else "none", linewidth=1.8, label=s.label, **look))
    fig.legend(handles=handles, loc="outside center right", title="method")


# ---------------------------------------------------------------------------------------------
# 1. Accuracy–robustness trade-off


def robust_attack(per_seed: pd.DataFrame) -> str:
    """AA where every variant with a natural accuracy has it, else PGD-20 (one attack per panel)."""
    have = per_seed.groupby("attack")["variant"].agg(set)
    natural = have.get("natural", set())
    for attack in ("aa", "pgd20"):
        if attack in have and natural and natural <= have[attack]:
            return attack
    datasets = ", ".join(map(str, per_seed["dataset"].unique()))
    raise ValueError(f"{datasets}: need natural and AA or PGD-20 accuracies of every variant, "
                     f"found {sorted(have.index)}")


def tradeoff_points(per_seed: pd.DataFrame, attack: str) -> pd.DataFrame:
    """Mean and std (ddof = 1) over seeds of natural and ``attack`` accuracy, one row per variant."""
    wide = per_seed[per_seed["attack"].isin(["natural", attack])].pivot_table(
        index=["variant", "seed"], columns="attack", values="accuracy").dropna()
    stats = wide.groupby("variant").agg(["mean", "std", "count"])
    return pd.DataFrame({"natural": stats[("natural", "mean")], "natural_std": stats[("natural", "std")].fillna(0.0),
                         "robust": stats[(attack, "mean")], "robust_std": stats[(attack, "std")].fillna(0.0),
                         "n_seeds": stats[("natural", "count")]})


def _robust_label(per_seed: pd.DataFrame, attack: str, fallback: bool) -> str:
    """The y label: which attack, on how many test images when fewer than the natural column's."""
    n = per_seed.loc[per_seed["attack"] == attack, "n_examples"].min()
    n_natural = per_seed.loc[per_seed["attack"] == "natural", "n_examples"].min()
    label = f"{COLUMNS[attack]} accuracy (%)"
    if n < n_natural:
        label += f"\nfirst {n} test images"
    return label + ("\n(no AA results: PGD-20 instead)" if fallback else "")


HOLLOW_EDGE = 1.8
"""Outline width of the trade-off figure's hollow markers (points)."""


def tradeoff_marker_sizes(styles: Mapping[str, VariantStyle]) -> dict[str, float]:
    """Marker size of each variant in the trade-off figure: one size per family, the first family's largest.

    Two methods can land on the same point (a PART variant equal to its base, two bases alike); a filled marker
    would hide the one drawn before it. Hollow outlines of different sizes nest instead: the families differ in
    size, a family's variants in shape (:func:`variant_styles`), and no point is moved off its data.
    """
    families = list(dict.fromkeys(s.family for s in styles.values()))
    return {v: max(12.0 - 2.5 * families.index(s.family), 5.0) for v, s in styles.items()}


def tradeoff_figure(per_seed: pd.DataFrame, variants: Mapping[str, Variant]) -> Figure:
    """Natural (x) vs AA (y, PGD-20 where AA is missing) accuracy, one panel per dataset.

    ``per_seed`` is :func:`part.analysis.aggregate.collect`'s long table; ``variants`` the grid's (their method
    says which variant is the base of its family). Each variant is a hollow marker (its size its family's,
    :func:`tradeoff_marker_sizes`, so coincident methods stay visible) with ± std error bars over seeds; an
    arrow runs from each base method to each PART variant of its family, the paper's claim being that these
    arrows point right at equal height.
    """
    apply_style()
    styles = variant_styles(variants)
    sizes = tradeoff_marker_sizes(styles)
    datasets = list(dict.fromkeys(per_seed["dataset"]))
    fig = new_figure(figsize=(4.6 * len(datasets) + 1.8, 4.4))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets):
        data = per_seed[per_seed["dataset"] == dataset]
        attack = robust_attack(data)
        points = tradeoff_points(data, attack)
        shown = [v for v in styles if v in points.index]
        _tradeoff_arrows(ax, points, {v: styles[v] for v in shown})
        for v in shown:
            s, p = styles[v], points.loc[v]
            ax.errorbar(p["natural"], p["robust"], xerr=p["natural_std"], yerr=p["robust_std"], color=s.colour,
                        marker=s.marker, markersize=sizes[v], markerfacecolor="none", markeredgewidth=HOLLOW_EDGE,
                        linestyle="none", capsize=3, elinewidth=1.2, label=s.label, zorder=3)
        ax.margins(0.15)
        arch = data["arch"].iloc[0]
        seeds = int(points["n_seeds"].max())
        ax.set_title(f"{dataset} ({arch}), {seeds} seed{'s' if seeds > 1 else ''}")
        ax.set_xlabel("natural accuracy (%)")
        ax.set_ylabel(_robust_label(data, attack, fallback=attack != "aa"))
    _legend_right(fig, [styles[v] for v in styles if v in set(per_seed["variant"])], hollow=sizes)
    fig.suptitle("Accuracy–robustness trade-off (mean ± std over seeds; arrows: base → PART variant)")
    return fig


def _tradeoff_arrows(ax, points: pd.DataFrame, styles: Mapping[str, VariantStyle]) -> None:
    """An arrow from every base variant to every PART variant of the same family."""
    for base, b in styles.items():
        if not b.variant.is_base:
            continue
        for v, s in styles.items():
            if s.variant.is_part and s.family == b.family:
                ax.annotate("", xy=(points.loc[v, "natural"], points.loc[v, "robust"]),
                            xytext=(points.loc[base, "natural"], points.loc[base, "robust"]),
                            arrowprops={"arrowstyle": "-|>", "color": s.colour, "alpha": 0.7, "lw": 1.4,
                                        "shrinkA": 6, "shrinkB": 6}, zorder=2)


def plot_tradeoff(per_seed: pd.DataFrame, variants: Mapping[str, Variant], stem: str | Path) -> list[Path]:
    """:func:`tradeoff_figure`, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(tradeoff_figure(per_seed, variants), stem)


# ---------------------------------------------------------------------------------------------
# 1b. The claim: PART − base differences with their intervals


CLAIM_PANELS = {"natural": "Δ natural accuracy (points)", "aa": "Δ AA accuracy (points)"}
"""The claim figure's columns: which difference (the line it must clear: 0; −the AA tolerance of the table)."""


def claim_figure(verdicts: pd.DataFrame, variants: Mapping[str, Variant]) -> Figure:
    """PART − base differences with their confidence intervals: a row of panels per dataset, a column
    for Δ natural and one for Δ AA, one line per PART variant — ours (filled, with our verdict in the
    label) above the paper's (hollow). ``verdicts`` is ``claim_verdicts.csv``; a dashed line marks 0,
    a red one the AA tolerance the claim allowed when the table was made (its ``aa_tolerance`` column).
    """
    apply_style()
    tolerance = float(verdicts["aa_tolerance"].iloc[0])
    lines = {"natural": 0.0, "aa": -tolerance}
    styles = variant_styles(variants)
    datasets = list(dict.fromkeys(zip(verdicts["dataset"], verdicts["arch"])))
    height = max(2.0, 0.75 * verdicts.groupby("dataset").size().max() + 1.0)
    fig = new_figure(figsize=(11.0, height * len(datasets) + 0.8))
    axes = fig.subplots(len(datasets), len(CLAIM_PANELS), squeeze=False)
    for row, (dataset, arch) in enumerate(datasets):
        rows = verdicts[verdicts["dataset"] == dataset].reset_index(drop=True)
        y = np.arange(len(rows))[::-1].astype(float)
        for col, (attack, xlabel) in enumerate(CLAIM_PANELS.items()):
            ax = axes[row, col]
            ax.axvline(0.0, color="0.4", linestyle="--", linewidth=1)
            if lines[attack] != 0.0:
                ax.axvline(lines[attack], color="tab:red", linewidth=1.2)
            for i, r in rows.iterrows():
                colour = styles[r["variant"]].colour if r["variant"] in styles else "0.3"
                for prefix, dy, face in (("", 0.15, colour), ("paper_", -0.15, "white")):
                    mid, low, high = (r[f"{prefix}{attack}_{k}"] for k in ("diff", "low", "high"))
                    if pd.isna(mid):
                        continue
                    err = None if pd.isna(low) else [[mid - low], [high - mid]]
                    ax.errorbar(mid, y[i] + dy, xerr=err, color=colour, marker="o" if prefix == "" else "s",
                                markerfacecolor=face, markersize=7, capsize=3, linestyle="none", elinewidth=1.4)
            ax.set_yticks(y, [f"{r['label']}\nours: {r['verdict']}\npaper: {r['paper_verdict']}"
                              for _, r in rows.iterrows()] if col == 0 else [])
            ax.set_ylim(-0.6, len(rows) - 0.4)
            ax.set_xlabel(xlabel)
            ax.set_title(f"{dataset} ({arch}): {_n_text(rows, attack)}", fontsize=10)
    handles = [Line2D([], [], color="0.3", marker="o", linestyle="none", label="ours"),
               Line2D([], [], color="0.3", marker="s", markerfacecolor="white", linestyle="none", label="paper"),
               Line2D([], [], color="tab:red", label=f"AA tolerance (−{tolerance:g})")]
    fig.legend(handles=handles, loc="outside lower center", ncol=3)
    level = f"{100 * float(verdicts['confidence'].iloc[0]):g} %"
    fig.suptitle(f"PART − base method, {level} intervals (ours: paired by seed and test example; "
                 f"paper: Welch, {int(verdicts['paper_runs'].iloc[0])} runs assumed)")
    return fig


def _n_text(rows: pd.DataFrame, attack: str) -> str:
    """The budget behind a panel: paired seeds and test examples of ours (rows with results)."""
    measured = rows[rows["n_seeds"] > 0]
    seeds = "/".join(map(str, sorted(set(measured["n_seeds"].astype(int)))))
    examples = "/".join(map(str, sorted(set(measured[f"{attack}_n_examples"].dropna().astype(int)))))
    return f"{seeds or 0} seeds × {examples or 0} {COLUMNS[attack]} examples"


def plot_claim(verdicts: pd.DataFrame, variants: Mapping[str, Variant], stem: str | Path) -> list[Path]:
    """:func:`claim_figure`, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(claim_figure(verdicts, variants), stem)


# ---------------------------------------------------------------------------------------------
# 2. + 4. Training logs: curves and ε-map statistics


def collect_logs(grid: Grid, paths: Iterable[str | Path]) -> pd.DataFrame:
    """Long table of every epoch's record in the ``log.jsonl`` files ``paths`` of the grid's main runs.

    Each record is tagged like :func:`part.analysis.aggregate.collect`'s rows (dataset, arch, variant, label,
    family, seed) plus the run's ``method`` and ``warmup_epochs``, so figures can mark where PART starts.
    Every path must exist.
    """
    frames = []
    for path in map(Path, paths):
        run = grid.run_at(path)
        records = pd.DataFrame(read_log(path.parent))
        variant = grid.variants[run.variant]
        frames.append(records.assign(dataset=run.dataset, arch=run.arch, variant=run.variant, label=variant.label,
                                     family=variant.family, seed=run.seed, method=run.config.method,
                                     part=run.config.pixel_reweighted, warmup_epochs=run.config.warmup_epochs))
    if not frames:
        raise ValueError(f"{grid.results_dir}: no log.jsonl given to plot")
    return pd.concat(frames, ignore_index=True)


def _band(ax, data: pd.DataFrame, y: str, style: VariantStyle, markevery: list[int] | None = None) -> None:
    """Mean over seeds per epoch with a ± std band (no band from a single seed)."""
    stats = data.groupby("epoch")[y].agg(["mean", "std"])
    ax.plot(stats.index, stats["mean"], color=style.colour, linestyle=style.linestyle, linewidth=1.8,
            marker=style.marker if markevery else None, markevery=markevery, markersize=5, label=style.label)
    ax.fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], color=style.colour,
                    alpha=0.18, linewidth=0)


def _warmup_lines(ax, data: pd.DataFrame, annotate: bool) -> None:
    """A vertical line after each PART variant's last warm-up epoch (plain methods have none)."""
    for w in sorted(set(data.loc[data["part"], "warmup_epochs"])):
        if w > 0:
            ax.axvline(w + 0.5, color="0.35", linestyle=(0, (4, 3)), linewidth=1)
            if annotate:
                ax.annotate("warm-up end", xy=(w + 0.5, 1), xycoords=("data", "axes fraction"), xytext=(3, -3),
                            textcoords="offset points", ha="left", va="top", fontsize=8, color="0.3")


def training_curves_figure(logs: pd.DataFrame, variants: Mapping[str, Variant]) -> Figure:
    """One dataset's loss and train accuracy per epoch: a row per metric, a column per family.

    Lines are the mean over seeds with a ± std band; a family per column keeps three lines per
    panel, and shared y axes per row keep the families comparable.
    """
    apply_style()
    styles = variant_styles(variants)
    families = list(dict.fromkeys(styles[v].family for v in styles if v in set(logs["variant"])))
    metrics = [m for m in CURVE_METRICS if m in logs.columns]
    fig = new_figure(figsize=(3.9 * len(families) + 2.0, 2.9 * len(metrics) + 0.6))
    axes = fig.subplots(len(metrics), len(families), squeeze=False, sharex=True, sharey="row")
    for col, family in enumerate(families):
        shown = [v for v in styles if styles[v].family == family and v in set(logs["variant"])]
        for row, metric in enumerate(metrics):
            ax = axes[row, col]
            for v in shown:
                _band(ax, logs[logs["variant"] == v], metric, styles[v])
            _warmup_lines(ax, logs[logs["variant"].isin(shown)], annotate=row == 0)
            if row == 0:
                ax.set_title(family)
            if col == 0:
                ax.set_ylabel(CURVE_METRICS[metric])
            if row == len(metrics) - 1:
                ax.set_xlabel("epoch")
    _legend_right(fig, [styles[v] for v in styles if v in set(logs["variant"])], line=True, marker=False)
    fig.suptitle(f"Training curves on {', '.join(dict.fromkeys(logs['dataset']))} (mean ± std over seeds)")
    return fig


def plot_training_curves(logs: pd.DataFrame, variants: Mapping[str, Variant], stem: str | Path) -> list[Path]:
    """:func:`training_curves_figure` of one dataset's logs, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(training_curves_figure(logs, variants), stem)


VALIDATION_METRICS = {"val_robust": "robust validation\naccuracy (%)", "val_natural": "natural validation\naccuracy (%)"}
"""log.jsonl fields of the validation figure (written on validated epochs only), with their axis labels."""


def _refresh_marks(runs: pd.DataFrame) -> list[int] | None:
    """Positions (in the validated epochs' order) of the epochs whose ε-maps were recomputed; None if none."""
    epochs = sorted(runs["epoch"].unique())
    refreshed = set(runs.loc[runs["refreshed"].astype(bool), "epoch"])
    marks = [i for i, e in enumerate(epochs) if e in refreshed]
    return marks or None


def validation_curves_figure(logs: pd.DataFrame, variants: Mapping[str, Variant]) -> Figure:
    """One dataset's robust and natural accuracy on the held-out split per validated epoch: a row per
    metric, a column per family, mean ± std over seeds, the warm-up's end and the ε-map refreshes marked.

    Robust overfitting reads at a glance: a robust curve that peaks and falls while natural accuracy
    keeps rising.
    """
    if "val_robust" not in logs.columns or logs["val_robust"].isna().all():
        raise ValueError("no validated epoch in the logs (the runs were trained with validation.size: 0)")
    apply_style()
    styles = variant_styles(variants)
    validated = logs.dropna(subset=["val_robust"])
    present = set(validated["variant"])
    families = list(dict.fromkeys(styles[v].family for v in styles if v in present))
    fig = new_figure(figsize=(3.9 * len(families) + 2.0, 2.9 * len(VALIDATION_METRICS) + 0.6))
    axes = fig.subplots(len(VALIDATION_METRICS), len(families), squeeze=False, sharex=True, sharey="row")
    for col, family in enumerate(families):
        shown = [v for v in styles if styles[v].family == family and v in present]
        for row, (metric, label) in enumerate(VALIDATION_METRICS.items()):
            ax = axes[row, col]
            for v in shown:
                runs = validated[validated["variant"] == v]
                _band(ax, runs, metric, styles[v], _refresh_marks(runs))
            _warmup_lines(ax, validated[validated["variant"].isin(shown)], annotate=row == 0)
            if row == 0:
                ax.set_title(family)
            if col == 0:
                ax.set_ylabel(label)
            if row == len(VALIDATION_METRICS) - 1:
                ax.set_xlabel("epoch")
    _legend_right(fig, [styles[v] for v in styles if v in present], line=True)
    fig.suptitle(f"Validation curves on {', '.join(dict.fromkeys(logs['dataset']))} (mean ± std over seeds; "
                 "markers: ε-map refresh)")
    return fig


def plot_validation_curves(logs: pd.DataFrame, variants: Mapping[str, Variant], stem: str | Path) -> list[Path]:
    """:func:`validation_curves_figure` of one dataset's logs, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(validation_curves_figure(logs, variants), stem)


def eps_share_figure(logs: pd.DataFrame, variants: Mapping[str, Variant]) -> Figure:
    """Share of pixels trained at the full ε in each PART epoch: a row per dataset, a column per family.

    Only PART-phase epochs are drawn (the warm-up and the plain methods use ε everywhere, 100 %);
    markers sit on the epochs whose ε-maps were recomputed, so s = 1 and s = 10 read apart. One
    family per column keeps the ± std bands of a panel from covering each other.
    """
    apply_style()
    styles = variant_styles(variants)
    part = logs[logs["phase"] == "part"].assign(full_eps_pct=lambda d: 100 * d["full_eps_share"])
    if part.empty:
        raise ValueError("no PART epoch in the logs: the ε-map statistics need a PART variant")
    shown = [v for v in styles if v in set(part["variant"])]
    datasets = list(dict.fromkeys(part["dataset"]))
    families = list(dict.fromkeys(styles[v].family for v in shown))
    fig = new_figure(figsize=(3.9 * len(families) + 2.0, 3.0 * len(datasets) + 0.6))
    axes = fig.subplots(len(datasets), len(families), squeeze=False, sharex=True, sharey="row")
    for row, dataset in enumerate(datasets):
        for col, family in enumerate(families):
            ax = axes[row, col]
            for v in [v for v in shown if styles[v].family == family]:
                runs = part[(part["dataset"] == dataset) & (part["variant"] == v)]
                _band(ax, runs, "full_eps_pct", styles[v], _refresh_marks(runs))
            ax.set_title(f"{dataset}: {family}")
            if col == 0:
                ax.set_ylabel("pixels at full ε (%)")
            if row == len(datasets) - 1:
                ax.set_xlabel("epoch (PART phase)")
    _legend_right(fig, [styles[v] for v in shown], line=True)
    fig.suptitle("Share of pixels at full ε per training epoch (mean ± std over seeds; markers: ε-map refresh)")
    return fig


def plot_eps_share(logs: pd.DataFrame, variants: Mapping[str, Variant], stem: str | Path) -> list[Path]:
    """:func:`eps_share_figure`, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(eps_share_figure(logs, variants), stem)


# ---------------------------------------------------------------------------------------------
# 5. Robustness curve: accuracy against ε


def curve_figure(table: pd.DataFrame, variants: Mapping[str, Variant]) -> Figure:
    """One dataset's accuracy against ℓ∞ PGD per ε: a panel per family, a line per variant (the base method and
    its PART variants) with its interval as a band, the training ε as a dotted vertical line.

    ``table`` is ``robustness_curve.csv`` of one dataset (``part.analysis.curve_table.curve_table``); the large ε (the
    unbounded-budget check) is not drawn — it would squash the axis — but its mean accuracies are written in
    each panel's lower right corner (:func:`large_eps_text`).
    """
    datasets = list(dict.fromkeys(table["dataset"]))
    if len(datasets) != 1:
        raise ValueError(f"a robustness-curve figure shows one dataset; the table has {datasets}")
    apply_style()
    styles = variant_styles(variants)
    present = set(table["variant"])
    families = list(dict.fromkeys(styles[v].family for v in styles if v in present))
    fig = new_figure(figsize=(3.9 * len(families) + 2.0, 3.6))
    axes = fig.subplots(1, len(families), squeeze=False, sharey=True)[0]
    drawn = table[~table["large"].astype(bool)]
    for ax, family in zip(axes, families):
        shown = [v for v in styles if styles[v].family == family and v in present]
        for v in shown:
            rows, s = drawn[drawn["variant"] == v].sort_values("eps_255"), styles[v]
            ax.plot(rows["eps_255"], rows["mean"], color=s.colour, linestyle=s.linestyle, marker=s.marker,
                    markersize=4, linewidth=1.6, label=s.label)
            if rows["ci_low"].notna().any():
                ax.fill_between(rows["eps_255"], rows["ci_low"], rows["ci_high"], color=s.colour, alpha=0.18,
                                linewidth=0)
        here = table[table["variant"].isin(shown)]
        _training_eps_lines(ax, sorted(set(here["train_eps_255"].round(6))))
        ax.set_title(family)
        if len(here[here["large"].astype(bool)]):
            ax.text(0.98, 0.02, large_eps_text(here), transform=ax.transAxes, ha="right", va="bottom", fontsize=8,
                    color="0.3")
        ax.set_xlabel("ε (×1/255), ℓ∞ PGD")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("accuracy (%)")
    _legend_right(fig, [styles[v] for v in styles if v in present], line=True)
    first = table.iloc[0]
    over = "seeds × test examples" if (table["interval_over"] == "seeds and test examples").all() else (
        "test examples only (one seed)" if (table["interval_over"] != "seeds and test examples").all() else "mixed")
    level = f"{100 * float(first['confidence']):g} %"
    fig.suptitle(f"Robustness curve on {datasets[0]} ({first['arch']}): mean, {level} band over {over}; "
                 f"{int(first['n_examples'])} test examples")
    return fig


def _training_eps_lines(ax, eps_255: list[float]) -> None:
    """A dotted line at each training ε, labelled inside its own panel: on the line's left where it lies in the
    right half of the axis, so a label never runs into the next panel and reads as that panel's."""
    for eps in eps_255:
        ax.axvline(eps, color="0.35", linestyle=":", linewidth=1.2)
    ax.autoscale_view()
    low, high = ax.get_xlim()
    for i, eps in enumerate(eps_255):
        left = eps > (low + high) / 2
        ax.annotate(f"training ε = {eps:g}/255", xy=(eps, 1), xycoords=("data", "axes fraction"),
                    xytext=(-3 if left else 3, -3 - 10 * i), textcoords="offset points",
                    ha="right" if left else "left", va="top", fontsize=8, color="0.3")


def large_eps_text(rows: pd.DataFrame) -> str:
    """What a panel says of the large ε it does not draw: the range of its variants' mean accuracies there.

    A mean over seeds bounds no single model, so the text gives the means as they are, not "at most" a value;
    the per-model check with its threshold is the sanity table's."""
    large = rows[rows["large"].astype(bool)]
    low, high = large["mean"].min(), large["mean"].max()
    means = f"{low:.1f}%" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}%"
    return f"not drawn: large ε = {large['eps_255'].iloc[0]:g}/255, mean accuracy {means}"


def plot_curve(table: pd.DataFrame, variants: Mapping[str, Variant], stem: str | Path) -> list[Path]:
    """:func:`curve_figure` of one dataset's rows of ``robustness_curve.csv``, written to ``stem.png`` / ``.pdf``
    (stem: ``results/figures/`` + ``part.base.grid.curve_figure_stem(dataset)``)."""
    return save_figure(curve_figure(table, variants), stem)
