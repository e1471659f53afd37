"""The pipeline's figures: trade-off, the claim's differences, training curves, CAM / ε-map gallery,
ε-map statistics.

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
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import nn

from part import io
from part.cam import unit_maps
from part.compare import AA_TOLERANCE
from part.config import BASE_METHOD, DEFAULTS, RunConfig
from part.evaluate import load_run
from part.grid import Run, expand
from part.importance import QUADRANTS, eps_map, importance_mask
from part.tablefmt import COLUMNS
from part.train import RunPaths, read_log

DPI = 150
FAMILY_ORDER = ("AT", "TRADES", "MART")
"""The paper's families, which always get the first three colours of the palette, in this order."""
PALETTE = "colorblind"
BASE_METHODS = frozenset(m for m, base in BASE_METHOD.items() if m == base and m != "natural")
"""Methods that are a family's base (at, trades, mart): the start of every trade-off arrow."""
_MARKERS = ("^", "s", "D", "v", "P", "X", "<", ">")
_LINESTYLES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)), (0, (8, 2)))
_SHADES = (0.3, 0.55, 0.15, 0.45, 0.65, 0.25)
"""How far each non-base variant of a family is blended toward black, in config order."""

CURVE_METRICS = {"loss": "training loss", "train_acc": "train accuracy (%)\non its training AEs"}
"""log.jsonl fields the training-curve figure plots, with their axis labels. ``train_acc`` is measured on
the logits the outer loss returns, i.e. on the (pixel-reweighted) adversarial examples of the epoch."""
CAM_NAMES = {"gradcam": "Grad-CAM", "xgradcam": "XGrad-CAM", "layercam": "LayerCAM"}
GALLERY_POOL = 100
"""Gallery images are picked among the first this-many test images (every supported set has more)."""


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
    label: str
    family: str
    method: str
    colour: tuple[float, float, float]
    marker: str
    linestyle: Any

    @property
    def is_base(self) -> bool:
        return self.method in BASE_METHODS

    @property
    def is_part(self) -> bool:
        return self.method.startswith("part")


def variant_method(spec: Mapping[str, Any]) -> str:
    """A variant's method as its config states it (``run.method``; the run default when unset)."""
    return (spec.get("run") or {}).get("method", DEFAULTS["method"])


def variant_styles(variants: Mapping[str, Mapping[str, Any]]) -> dict[str, VariantStyle]:
    """Style of every variant of a config's ``variants`` mapping (label, family, run), in its order.

    Base methods get the family colour, a circle and a solid line; the family's other variants,
    in config order, get darker shades and their own markers and dash patterns.
    """
    palette = family_palette(spec["family"] for spec in variants.values())
    styles, rank = {}, {}
    for name, spec in variants.items():
        family, method = spec["family"], variant_method(spec)
        colour = palette[family]
        if method in BASE_METHODS:
            styles[name] = VariantStyle(spec["label"], family, method, colour, "o", "-")
            continue
        k = rank[family] = rank.get(family, -1) + 1
        shade = _SHADES[k % len(_SHADES)]
        styles[name] = VariantStyle(spec["label"], family, method, tuple(c * (1 - shade) for c in colour),
                                    _MARKERS[k % len(_MARKERS)], _LINESTYLES[k % len(_LINESTYLES)])
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
        paths.append(io.atomic_write(stem.with_suffix(f".{fmt}"), lambda tmp, fmt=fmt, meta=meta: fig.savefig(
            tmp, format=fmt, dpi=DPI, bbox_inches="tight", metadata=meta)))
    return paths


def _legend_right(fig: Figure, styles: Iterable[VariantStyle], line: bool = False, marker: bool = True) -> None:
    """One legend for the whole figure, outside every panel, in config order."""
    handles = [Line2D([], [], color=s.colour, marker=s.marker if marker else None, markersize=7,
                      linestyle=s.linestyle if line else "none", linewidth=1.8, label=s.label) for s in styles]
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


def tradeoff_figure(per_seed: pd.DataFrame, variants: Mapping[str, Mapping[str, Any]]) -> Figure:
    """Natural (x) vs AA (y, PGD-20 where AA is missing) accuracy, one panel per dataset.

    ``per_seed`` is :func:`part.aggregate.collect`'s long table; ``variants`` the config's
    ``variants`` (their ``run.method`` says which variant is the base of its family). Each variant
    is a marker with ± std error bars over seeds; an arrow runs from each base method to each PART
    variant of its family, the paper's claim being that these arrows point right at equal height.
    """
    apply_style()
    styles = variant_styles(variants)
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
                        marker=s.marker, markersize=8, markeredgecolor="white", linestyle="none", capsize=3,
                        elinewidth=1.2, label=s.label, zorder=3)
        ax.margins(0.15)
        arch = data["arch"].iloc[0]
        seeds = int(points["n_seeds"].max())
        ax.set_title(f"{dataset} ({arch}), {seeds} seed{'s' if seeds > 1 else ''}")
        ax.set_xlabel("natural accuracy (%)")
        ax.set_ylabel(_robust_label(data, attack, fallback=attack != "aa"))
    _legend_right(fig, [styles[v] for v in styles if v in set(per_seed["variant"])])
    fig.suptitle("Accuracy–robustness trade-off (mean ± std over seeds; arrows: base → PART variant)")
    return fig


def _tradeoff_arrows(ax, points: pd.DataFrame, styles: Mapping[str, VariantStyle]) -> None:
    """An arrow from every base variant to every PART variant of the same family."""
    for base, b in styles.items():
        if not b.is_base:
            continue
        for v, s in styles.items():
            if s.is_part and s.family == b.family:
                ax.annotate("", xy=(points.loc[v, "natural"], points.loc[v, "robust"]),
                            xytext=(points.loc[base, "natural"], points.loc[base, "robust"]),
                            arrowprops={"arrowstyle": "-|>", "color": s.colour, "alpha": 0.7, "lw": 1.4,
                                        "shrinkA": 6, "shrinkB": 6}, zorder=2)


def plot_tradeoff(per_seed: pd.DataFrame, variants: Mapping[str, Mapping[str, Any]], stem: str | Path) -> list[Path]:
    """:func:`tradeoff_figure`, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(tradeoff_figure(per_seed, variants), stem)


# ---------------------------------------------------------------------------------------------
# 1b. The claim: PART − base differences with their intervals


CLAIM_PANELS = {"natural": ("Δ natural accuracy (points)", 0.0), "aa": ("Δ AA accuracy (points)", -AA_TOLERANCE)}
"""The claim figure's columns: which difference, and the line it must clear (0; the AA tolerance)."""


def claim_figure(verdicts: pd.DataFrame, variants: Mapping[str, Mapping[str, Any]]) -> Figure:
    """PART − base differences with their confidence intervals: a row of panels per dataset, a column
    for Δ natural and one for Δ AA, one line per PART variant — ours (filled, with our verdict in the
    label) above the paper's (hollow). ``verdicts`` is ``claim_verdicts.csv``; a dashed line marks 0,
    a red one the AA tolerance the claim allows.
    """
    apply_style()
    styles = variant_styles(variants)
    datasets = list(dict.fromkeys(zip(verdicts["dataset"], verdicts["arch"])))
    height = max(2.0, 0.75 * verdicts.groupby("dataset").size().max() + 1.0)
    fig = new_figure(figsize=(11.0, height * len(datasets) + 0.8))
    axes = fig.subplots(len(datasets), len(CLAIM_PANELS), squeeze=False)
    for row, (dataset, arch) in enumerate(datasets):
        rows = verdicts[verdicts["dataset"] == dataset].reset_index(drop=True)
        y = np.arange(len(rows))[::-1].astype(float)
        for col, (attack, (xlabel, line)) in enumerate(CLAIM_PANELS.items()):
            ax = axes[row, col]
            ax.axvline(0.0, color="0.4", linestyle="--", linewidth=1)
            if line != 0.0:
                ax.axvline(line, color="tab:red", linewidth=1.2)
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
               Line2D([], [], color="tab:red", label=f"AA tolerance (−{AA_TOLERANCE:g})")]
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


def plot_claim(verdicts: pd.DataFrame, variants: Mapping[str, Mapping[str, Any]], stem: str | Path) -> list[Path]:
    """:func:`claim_figure`, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(claim_figure(verdicts, variants), stem)


# ---------------------------------------------------------------------------------------------
# 2. + 4. Training logs: curves and ε-map statistics


def figure_stems(cfg: dict[str, Any]) -> list[str]:
    """The file stems (below ``results/figures/``) of every figure a workflow grid gets.

    A trade-off and training curves per dataset always; a gallery per dataset that has a CAM-based
    PART run; the ε-map statistics and the claim's differences once any run is pixel-reweighted.
    """
    runs = expand(cfg)
    stems = ["tradeoff", *(f"training_curves_{d}" for d in cfg["datasets"])]
    stems += [f"gallery_{d}" for d in cfg["datasets"] if gallery_run(cfg, d) is not None]
    return stems + (["eps_share", "claim"] if any(run.config.pixel_reweighted for run in runs) else [])


def collect_logs(cfg: dict[str, Any], dataset: str | None = None) -> pd.DataFrame:
    """Long table of every epoch's ``log.jsonl`` record of the grid's runs (those that have one), of
    ``dataset``'s runs only if given.

    Each record is tagged like :func:`part.aggregate.collect`'s rows (dataset, arch, variant, label,
    family, seed) plus the run's ``warmup_epochs``, so figures can mark where PART starts.
    """
    frames = []
    for run in expand(cfg):
        run_dir = Path(cfg["results_dir"]) / run.path
        if (dataset is not None and run.dataset != dataset) or not RunPaths(run_dir).log.is_file():
            continue
        records = pd.DataFrame(read_log(run_dir))
        spec = cfg["variants"][run.variant]
        frames.append(records.assign(dataset=run.dataset, arch=run.arch, variant=run.variant, label=spec["label"],
                                     family=spec["family"], seed=run.seed, method=run.config.method,
                                     warmup_epochs=run.config.warmup_epochs))
    if not frames:
        raise ValueError(f"{cfg['results_dir']}: no log.jsonl found for any run of the grid")
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
    for w in sorted(set(data.loc[data["method"].str.startswith("part"), "warmup_epochs"])):
        if w > 0:
            ax.axvline(w + 0.5, color="0.35", linestyle=(0, (4, 3)), linewidth=1)
            if annotate:
                ax.annotate("warm-up end", xy=(w + 0.5, 1), xycoords=("data", "axes fraction"), xytext=(3, -3),
                            textcoords="offset points", ha="left", va="top", fontsize=8, color="0.3")


def training_curves_figure(logs: pd.DataFrame, variants: Mapping[str, Mapping[str, Any]]) -> Figure:
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


def plot_training_curves(logs: pd.DataFrame, variants: Mapping[str, Mapping[str, Any]], stem: str | Path) -> list[Path]:
    """:func:`training_curves_figure` of one dataset's logs, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(training_curves_figure(logs, variants), stem)


def eps_share_figure(logs: pd.DataFrame, variants: Mapping[str, Mapping[str, Any]]) -> Figure:
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
                epochs = sorted(runs["epoch"].unique())
                refreshed = set(runs.loc[runs["refreshed"].astype(bool), "epoch"])
                _band(ax, runs, "full_eps_pct", styles[v], [i for i, e in enumerate(epochs) if e in refreshed])
            ax.set_title(f"{dataset}: {family}")
            if col == 0:
                ax.set_ylabel("pixels at full ε (%)")
            if row == len(datasets) - 1:
                ax.set_xlabel("epoch (PART phase)")
    _legend_right(fig, [styles[v] for v in shown], line=True)
    fig.suptitle("Share of pixels at full ε per training epoch (mean ± std over seeds; markers: ε-map refresh)")
    return fig


def plot_eps_share(logs: pd.DataFrame, variants: Mapping[str, Mapping[str, Any]], stem: str | Path) -> list[Path]:
    """:func:`eps_share_figure`, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(eps_share_figure(logs, variants), stem)


# ---------------------------------------------------------------------------------------------
# 3. CAM / ε-map gallery


@dataclass(frozen=True)
class Gallery:
    """What the gallery shows, as arrays: images (n, H, W, C) in [0, 1], unit CAMs and ε-maps (n, H, W)."""
    images: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    cams: np.ndarray
    eps_maps: np.ndarray
    full_share: np.ndarray
    eps: float
    eps_low: float
    cam_method: str
    per_channel: bool
    title: str


def gallery_run(cfg: dict[str, Any], dataset: str) -> Run | None:
    """The run the workflow's gallery shows: the first CAM-based PART variant in config order, first seed."""
    for run in expand(cfg):
        if run.dataset == dataset and run.config.pixel_reweighted and run.config.mask.recipe not in QUADRANTS:
            return run
    return None


def pick_images(labels: torch.Tensor, n: int) -> list[int]:
    """The first image of each class in test order (then the next ones), so the gallery varies."""
    first = list({int(y): i for i, y in reversed(list(enumerate(labels.tolist())))}.values())
    chosen = sorted(first)[:n]
    return chosen + [i for i in range(len(labels)) if i not in chosen][: n - len(chosen)]


def gallery_maps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: RunConfig, title: str) -> Gallery:
    """CAMs for the predicted class and ε-maps of a batch, with the run's own CAM and importance settings.

    The same package functions as a training refresh (:func:`part.cam.unit_maps`,
    :func:`part.importance.importance_mask`, :func:`part.importance.eps_map`), so the gallery shows
    the budgets the run trained with. A per-channel recipe (official_jet) is shown as its channel mean.
    """
    with torch.no_grad():
        preds = model(x).argmax(1)
    cams = unit_maps(model, x, method=cfg.cam.method, backend=cfg.cam.backend, mode=cfg.cam.resize).float()
    budgets = eps_map(importance_mask(cams, cfg.mask.recipe), cfg.attack.eps, cfg.attack.eps_low)
    full_share = (budgets == cfg.attack.eps).float().mean(dim=(1, 2, 3))  # as train.py's full_eps_share
    return Gallery(images=x.permute(0, 2, 3, 1).cpu().numpy(), labels=y.cpu().numpy(), preds=preds.cpu().numpy(),
                   cams=cams.cpu().numpy(), eps_maps=budgets.mean(1).cpu().numpy(),
                   full_share=full_share.cpu().numpy(), eps=cfg.attack.eps,
                   eps_low=cfg.attack.eps_low, cam_method=cfg.cam.method, per_channel=budgets.shape[1] > 1,
                   title=title)


def load_gallery(run_dir: str | Path, n_images: int = 4, label: str | None = None, device: str = "cpu",
                 data_dir: str | Path | None = None) -> Gallery:
    """:func:`gallery_maps` of a finished run on ``n_images`` fixed test images of distinct classes."""
    run = load_run(run_dir, n_examples=GALLERY_POOL, device=device, data_dir=data_dir)
    index = pick_images(run.y.cpu(), n_images)
    cfg = run.cfg
    title = f"{cfg.dataset} ({cfg.model}): {label or cfg.method}, seed {cfg.seed}"
    return gallery_maps(run.model, run.x[index], run.y[index], cfg, title)


def _budget_colours(g: Gallery) -> tuple[Colormap, Normalize]:
    """One colour block per budget level the ε-maps can hold: ε_low and ε, plus the channel means
    (k/3 of the way) of a per-RGB-channel recipe; ticks then sit on block centres."""
    levels = 4 if g.per_channel else 2
    step = (g.eps - g.eps_low) * 255 / (levels - 1)
    half = step / 2 if step > 0 else 0.5
    return colormaps["viridis"].resampled(levels), Normalize(g.eps_low * 255 - half, g.eps * 255 + half)


def gallery_figure(g: Gallery) -> Figure:
    """Images, CAM overlays and ε-maps (in 1/255, with a colourbar), one column per image.

    Pixels are drawn as blocks (nearest neighbour), so an 8×8 digit shows its real resolution and
    each ε-map pixel its own budget.
    """
    apply_style()
    n = len(g.images)
    fig = new_figure(figsize=(2.0 * n + 1.6, 6.6))
    axes = fig.subplots(3, n, squeeze=False)
    grey = g.images.shape[-1] == 1
    cam_name = CAM_NAMES.get(g.cam_method, g.cam_method)
    budget_cmap, budget_norm = _budget_colours(g)
    for i in range(n):
        image = g.images[i, ..., 0] if grey else g.images[i]
        axes[0, i].imshow(image, interpolation="nearest", **({"cmap": "gray", "vmin": 0, "vmax": 1} if grey else {}))
        axes[0, i].set_title(f"label {g.labels[i]}, pred. {g.preds[i]}", fontsize=10)
        # The CAM lies on a grey copy of the image, so its colours are not mixed with the image's.
        axes[1, i].imshow(image if grey else image.mean(-1), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[1, i].imshow(g.cams[i], cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="nearest")
        budget = axes[2, i].imshow(g.eps_maps[i] * 255, cmap=budget_cmap, norm=budget_norm, interpolation="nearest")
        budget.set_gid("eps_map")
        unit = "entries" if g.per_channel else "pixels"
        axes[2, i].set_xlabel(f"full ε: {100 * g.full_share[i]:.0f}% of {unit}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
    axes[0, 0].set_ylabel("test image")
    axes[1, 0].set_ylabel(f"{cam_name}\n(predicted class)")
    axes[2, 0].set_ylabel("ε-map" + ("\n(mean over RGB)" if g.per_channel else ""))
    # The CAM bar shows the colour map unblended: the overlay's alpha would wash it out.
    fig.colorbar(ScalarMappable(Normalize(0, 1), "jet"), ax=axes[1, :], shrink=0.9, label="CAM (0–1)")
    bar = fig.colorbar(budget, ax=axes[2, :], shrink=0.9, label="budget (/255)")
    bar.set_ticks([g.eps_low * 255, g.eps * 255], labels=[f"ε_low = {g.eps_low * 255:g}", f"ε = {g.eps * 255:g}"])
    fig.suptitle(f"CAM and ε-map: {g.title}")
    return fig


def plot_gallery(run_dir: str | Path, stem: str | Path, n_images: int = 4, label: str | None = None,
                 device: str = "cpu", data_dir: str | Path | None = None) -> list[Path]:
    """:func:`gallery_figure` of a finished run, written to ``stem.png`` / ``stem.pdf``."""
    return save_figure(gallery_figure(load_gallery(run_dir, n_images, label, device, data_dir)), stem)
