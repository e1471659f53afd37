"""The pipeline's figures, drawn from a tiny real grid: AT and PART on 400 digits, 2 epochs, 2 seeds.

The runs are evaluated with natural accuracy and PGD-20 only (AutoAttack would cost most of the
time budget), which is also the case the trade-off figure must fall back on; the AA path and the
arrow count of three full families are checked on a per-seed table of the same shape.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from pathlib import Path

import yaml

from part.analysis import aggregate, gallery, plots
from part.attacks.autoattack_adapter import EvaluationWarning
from part.base import config, grid
from part.data.prepared import PreparedDataset, Split, load_prepared, save_prepared
from part.evaluation.evaluate import evaluate
from part.models import build_model
from part.training.train import train

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "at": {"label": "AT", "family": "AT", "run": {"method": "at"}},
    "part_s1": {"label": "PART (s = 1)", "family": "AT", "run": {"method": "part", "mask": {"refresh_every": 1}}},
}
ROWS = {"at": grid.Variant("at", "AT", "AT", "at"), "part_s1": grid.Variant("part_s1", "PART (s = 1)", "AT", "part")}
"""VARIANTS as the figures take them: the grid's rows, with the method their runs train."""


def workflow_cfg(**grid_keys):
    """config.yaml's data, evaluation and resources around a grid of this module's own."""
    cfg = {k: v for k, v in yaml.safe_load((ROOT / "config.yaml").read_text()).items() if k != "experiments"}
    return {**cfg, **grid_keys}


@pytest.fixture(scope="module")
def grid_cfg(digits_dir, tmp_path_factory):
    """A trained and evaluated 2-variant x 2-seed grid on 400 training digits (a few CPU seconds).

    Two short epochs leave the models near chance in eval mode, which the evaluation warns about;
    the figures only need real files of the right shape, so that warning is silenced here.
    """
    full = load_prepared(digits_dir / "digits.pt")
    small = PreparedDataset(full.name, Split(full.train.images[:400], full.train.labels[:400]), full.test,
                            full.num_classes, full.meta)
    prepared = tmp_path_factory.mktemp("prepared_small")
    save_prepared(prepared / "digits.pt", small)
    cfg = workflow_cfg(results_dir=str(tmp_path_factory.mktemp("results")), datasets={"digits": {"arch": "small_cnn"}},
                       variants=VARIANTS, seeds=[0, 1],
                       run={"device": "cpu", "epochs": 2, "warmup_epochs": 1, "batch_size": 128, "attack": {"steps": 2}})
    cfg["data"] = {**cfg["data"], "prepared_dir": str(prepared)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # convs this small gain nothing from threads, and threads stall on a busy machine
    try:
        for run in grid.load(cfg).main:
            out = f"{cfg['results_dir']}/{run.path}"
            train(run.config, out, log=lambda _: None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", EvaluationWarning)
                evaluate(out, ["natural", "pgd20"], n_examples=40, log=None)
    finally:
        torch.set_num_threads(threads)
    return grid.load(cfg)


def assert_written(paths):
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in paths)
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[1].read_bytes()[:5] == b"%PDF-"


def arrows(ax):
    return [t for t in ax.texts if getattr(t, "arrow_patch", None) is not None]


def test_family_colours_do_not_depend_on_what_else_is_plotted():
    alone = plots.family_palette()
    with_extra = plots.family_palette(["natural", "AT"])
    assert {f: alone[f] for f in plots.FAMILY_ORDER} == {f: with_extra[f] for f in plots.FAMILY_ORDER}
    assert len(set(with_extra.values())) == len(with_extra)
    styles = plots.variant_styles(ROWS)
    assert styles["at"].variant.is_base and styles["at"].colour == alone["AT"]
    assert styles["part_s1"].variant.is_part and not styles["part_s1"].variant.is_base
    assert styles["part_s1"].colour != alone["AT"] and styles["part_s1"].marker != styles["at"].marker


def test_a_variant_is_part_by_the_method_its_runs_train_wherever_it_is_set():
    """A method set under ``run:`` (or a dataset's ``run:``) makes a variant PART as much as its own ``run.method``."""
    cfg = workflow_cfg(results_dir="results", datasets={"digits": {"arch": "small_cnn", "run": {"method": "part"}}},
                       seeds=[0], run={"device": "cpu"},
                       variants={"at": VARIANTS["at"], "plain": {"label": "PART", "family": "AT", "run": {}}})
    rows = grid.load(cfg).variants
    assert rows["plain"].method == "part" and rows["plain"].is_part and not rows["plain"].is_base
    styles = plots.variant_styles(rows)
    assert styles["at"].marker == "o" and styles["plain"].marker != "o"
    cfg["datasets"]["cifar10"] = {"arch": "resnet18"}  # where plain would train at, but part on the digits
    cfg["datasets"]["cifar10"]["run"] = {"method": "at"}
    with pytest.raises(config.ConfigError, match="variants.plain': trains different methods on different datasets"):
        grid.load(cfg)


def test_tradeoff_falls_back_to_pgd20_without_aa(grid_cfg, tmp_path):
    per_seed = aggregate.collect(grid_cfg, aggregate.existing_metrics(grid_cfg))
    assert "aa" not in set(per_seed["attack"])
    fig = plots.tradeoff_figure(per_seed, ROWS)
    ax = fig.axes[0]
    assert "PGD-20" in ax.get_ylabel() and "no AA" in ax.get_ylabel() and "(%)" in ax.get_xlabel()
    assert len(ax.containers) == 2 and len(arrows(ax)) == 1
    assert_written(plots.plot_tradeoff(per_seed, ROWS, tmp_path / "tradeoff"))


def synthetic_per_seed() -> tuple[pd.DataFrame, dict]:
    """Three families of base + two PART variants, 2 seeds, every attack; AA on fewer images."""
    variants, rows = {}, []
    for family, base in (("AT", "at"), ("TRADES", "trades"), ("MART", "mart")):
        part = "part" if base == "at" else f"part_{base}"
        for name, method in ((base, base), (f"{part}_s1", part), (f"{part}_s10", part)):
            variants[name] = grid.Variant(name, name, family, method)
            for seed in (0, 1):
                for attack, acc, n in (("natural", 80 + seed, 360), ("pgd20", 50 - seed, 360), ("aa", 45 + seed, 50)):
                    rows.append({"dataset": "digits", "arch": "small_cnn", "variant": name, "label": name,
                                 "family": family, "seed": seed, "attack": attack,
                                 "accuracy": acc + len(variants), "n_examples": n})
    return pd.DataFrame(rows), variants


def test_tradeoff_has_a_point_per_variant_and_an_arrow_per_part_variant():
    per_seed, variants = synthetic_per_seed()
    ax = plots.tradeoff_figure(per_seed, variants).axes[0]
    assert len(ax.containers) == 9 and len(arrows(ax)) == 6
    assert ax.get_ylabel().startswith("AA accuracy (%)") and "first 50 test images" in ax.get_ylabel()
    x, y = ax.containers[0].lines[0].get_data()
    assert (x[0], y[0]) == (81.5, 46.5)  # mean over seeds of the base "at": 80 + 1 (+0.5), 45 + 1 (+0.5)
    per_seed_without_mart_aa = per_seed[~((per_seed["family"] == "MART") & (per_seed["attack"] == "aa"))]
    assert "PGD-20" in plots.tradeoff_figure(per_seed_without_mart_aa, variants).axes[0].get_ylabel()


def test_training_curves_and_eps_share(grid_cfg, tmp_path):
    logs = plots.collect_logs(grid_cfg, [grid_cfg.run_dir(r) / "log.jsonl" for r in grid_cfg.main])
    assert set(logs["variant"]) == set(VARIANTS) and len(logs) == 2 * 2 * 2
    fig = plots.training_curves_figure(logs, ROWS)
    assert [ax.get_ylabel() for ax in fig.axes[:2]] == [plots.CURVE_METRICS["loss"], plots.CURVE_METRICS["train_acc"]]
    assert any(line.get_xdata()[0] == 1.5 for line in fig.axes[0].lines)  # warm-up end after epoch 1
    assert_written(plots.plot_training_curves(logs, ROWS, tmp_path / "curves"))
    share = plots.eps_share_figure(logs, ROWS)
    (line,) = share.axes[0].lines
    assert list(line.get_xdata()) == [2] and 0 < line.get_ydata()[0] < 100
    assert_written(plots.plot_eps_share(logs, ROWS, tmp_path / "eps_share"))
    assert grid_cfg.figure_stems() == ["tradeoff", "training_curves_digits", "gallery_digits", "robustness_curve_digits",
                                       "eps_share", "claim"]  # the demo config draws the robustness curve
    with pytest.raises(FileNotFoundError, match="no training log"):
        plots.collect_logs(grid_cfg, [grid_cfg.results_dir / "digits/small_cnn/at/seed0/nothing/log.jsonl"])


def test_gallery_shows_the_runs_budgets(grid_cfg, tmp_path):
    run = grid_cfg.gallery_run("digits")
    assert run.variant == "part_s1" and run.seed == 0
    run_dir = grid_cfg.run_dir(run)
    shown_run = gallery.load_gallery(run_dir, n_images=4)
    assert len(set(shown_run.labels)) == 4 and shown_run.images.shape == (4, 8, 8, 1)
    fig = gallery.gallery_figure(shown_run)
    shown = [im.get_array() for ax in fig.axes for im in ax.images if im.get_gid() == "eps_map"]
    assert len(shown) == 4
    levels = np.array([run.config.attack.eps_low, run.config.attack.eps]) * 255
    values = np.concatenate([np.asarray(a).ravel() for a in shown])
    assert np.isclose(values[:, None], levels[None]).any(axis=1).all()
    assert np.isclose(values, levels[1]).any()  # some pixels keep the full budget
    assert_written(gallery.plot_gallery(run_dir, tmp_path / "gallery", n_images=4, label="PART (s = 1)"))


def test_gallery_draws_rgb_images():
    cfg = config.from_dict({"dataset": "cifar10", "model": "small_cnn", "method": "part", "device": "cpu"})
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 3).eval()
    x, y = torch.rand(3, 3, 16, 16), torch.tensor([0, 1, 2])
    fig = gallery.gallery_figure(gallery.gallery_maps(model, x, y, cfg, "random RGB"))
    assert fig.axes[0].images[0].get_array().shape == (16, 16, 3)
    assert len([im for ax in fig.axes for im in ax.images if im.get_gid() == "eps_map"]) == 3


def test_claim_figure_draws_ours_beside_the_papers_with_the_tolerance():
    row = {"dataset": "cifar10", "arch": "resnet18", "variant": "part_s1", "label": "PART (s = 1)", "n_seeds": 3,
           "natural_diff": 0.8, "natural_low": 0.3, "natural_high": 1.3, "natural_n_examples": 10000,
           "aa_diff": -0.6, "aa_low": -1.0, "aa_high": -0.2, "aa_n_examples": 1000, "verdict": "inconclusive",
           "paper_natural_diff": 0.84, "paper_natural_low": 0.3, "paper_natural_high": 1.38, "paper_aa_diff": 0.11,
           "paper_aa_low": -0.41, "paper_aa_high": 0.63, "paper_verdict": "holds", "paper_runs": 3, "confidence": 0.95,
           "aa_tolerance": 0.5}
    fig = plots.claim_figure(pd.DataFrame([row]), ROWS)
    natural, aa = fig.axes[:2]
    assert [c.lines[0].get_xdata()[0] for c in aa.containers] == [-0.6, 0.11]  # ours, then the paper's
    assert [line.get_xdata()[0] for line in aa.lines if line.get_linestyle() == "-"] == [-0.5]  # the tolerance
    assert "ours: inconclusive" in natural.get_yticklabels()[0].get_text()
    assert "3 seeds × 1000 AA examples" in aa.get_title()
    loose = plots.claim_figure(pd.DataFrame([{**row, "aa_tolerance": 1.0}]), ROWS).axes[1]
    assert [line.get_xdata()[0] for line in loose.lines if line.get_linestyle() == "-"] == [-1.0]


def test_tradeoff_keeps_coincident_methods_visible():
    """Methods at the same point (a PART variant equal to its base; two bases alike) are hollow outlines that
    differ in shape within a family and in size between families, drawn at their data: none hides another."""
    per_seed, variants = synthetic_per_seed()
    same = per_seed["variant"].isin(["at", "part_s1", "trades"])
    per_seed.loc[same, "accuracy"] = per_seed.loc[same, "attack"].map({"natural": 80.0, "pgd20": 50.0, "aa": 45.0})
    fig = plots.tradeoff_figure(per_seed, variants)
    ax = fig.axes[0]
    markers = {}
    for container in ax.containers:
        line = container.lines[0]
        markers[container.get_label()] = line
        if container.get_label() in ("at", "part_s1", "trades"):
            assert [float(v[0]) for v in line.get_data()] == [80.0, 45.0]  # at the data, not moved
    looks = {(markers[v].get_marker(), markers[v].get_markersize()) for v in ("at", "part_s1", "trades")}
    assert len(looks) == 3  # three distinguishable markers at the one point
    assert all(markers[v].get_markerfacecolor() == "none" for v in markers)  # outlines: the one below shows through
    legend = {t.get_text(): h for t, h in zip(fig.legends[0].get_texts(), fig.legends[0].legend_handles)}
    assert all((legend[v].get_marker(), legend[v].get_markersize()) == (markers[v].get_marker(),
                                                                         markers[v].get_markersize()) for v in markers)
