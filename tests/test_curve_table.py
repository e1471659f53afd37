"""The robustness-curve and sanity tables, and the curve figure, on synthetic result files with known flags.

The runs are test_aggregate's synthetic grid (3 seeds × 1000 examples, "the first k examples correct"); each
gets an ``eval/curve.json`` whose ε = 0 row is its natural flags and whose ε = 8/255 row is its PGD-20 flags, so
the curve's intervals and PART − base differences must equal the main table's natural and PGD-20 cells exactly
(the same estimator, per ε). A one-seed grid checks the test-sample interval against its closed form.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from test_aggregate import ENVIRONMENT, grid_cfg, seed_accuracy, tables, write_grid

from part.analysis import compare, curve_table, plots, stats
from part.analysis.aggregate import MismatchError
from part.base import grid
from part.evaluation import results
from part.workflow import report

N = 1000
EPS = [0.0, 8.0, 64.0]


def curve_entry(run: grid.Run, run_dir: Path, points: list[dict]) -> dict:
    return {"evaluation": "curve", "n_examples": N, "precision": "fp32", "batch_size": 500, "device": "cpu",
            "split": "test", "subset": f"first {N} of {run.dataset} test",
            "run": {"dataset": run.dataset, "model": run.arch, "method": run.config.method, "seed": run.seed},
            "checkpoint_sha256": results.file_sha256(run_dir / "model.pt"), "created": "2024-07-01T00:00:00+00:00",
            "environment": ENVIRONMENT, "settings": {"kind": "curve", "seed": 0, "points": points}}


def write_curve(results_dir: Path, run: grid.Run, correct: np.ndarray, points: list[dict] | None = None) -> Path:
    run_dir = results_dir / run.path
    points = points or [{"eps_255": e, "eps": e / 255, "large": e == 64.0} for e in EPS]
    results.write_result(run_dir, "curve", curve_entry(run, run_dir, points), correct, np.arange(N),
                         arrays={"eps_255": np.array([p["eps_255"] for p in points])})
    return run_dir / "eval" / "curve.json"


def first(k: int) -> np.ndarray:
    return np.arange(N) < k


@pytest.fixture
def curves(tmp_path):
    """The synthetic grid with main tables and a curve per run: ε = 0 natural, ε = 8 PGD-20, ε = 64 zero."""
    results_dir = tmp_path / "results"
    cfg = grid_cfg(results_dir)
    write_grid(results_dir, cfg)
    main = pd.read_csv(tables(cfg, tmp_path / "tables")["main_csv"])
    g = grid.load(cfg)
    paths = []
    for run in g.main:
        if (results_dir / run.path / "metrics.json").is_file():
            acc = seed_accuracy(run.variant, run.seed)
            correct = np.stack([first(round(acc["natural"] * 10)), first(round(acc["pgd20"] * 10)), first(0)])
            paths.append(write_curve(results_dir, run, correct))
    return g, paths, main


def test_each_eps_gets_the_main_tables_estimator(curves, tmp_path):
    g, paths, main = curves
    out = curve_table.write_curve_table(g, paths, tmp_path / "tables")
    table = pd.read_csv(out["curve_csv"])
    assert set(table["variant"]) == {"at", "part_s1", "part_s10", "trades", "part_trades_s1"}  # part_s5: no runs
    main = main.set_index("variant")
    for eps, attack in ((0.0, "natural"), (8.0, "pgd20")):
        at = table[table["eps_255"] == eps].set_index("variant")
        for variant in at.index:
            for ours, theirs in (("mean", "mean"), ("std", "std"), ("ci_low", "ci_low"), ("ci_high", "ci_high"),
                                 ("diff", "diff"), ("diff_low", "diff_low"), ("diff_high", "diff_high")):
                expected = main.loc[variant, f"{attack}_{theirs}"]
                assert at.loc[variant, ours] == pytest.approx(expected, abs=1e-4, nan_ok=True), (eps, variant, ours)
    row = table[(table["variant"] == "part_s1") & (table["eps_255"] == 0.0)].iloc[0]
    assert row["mean"] == pytest.approx(83.4) and row["diff"] == pytest.approx(0.8)  # test_aggregate's hand values
    assert row["n_seeds"] == 3 and row["seeds"] == "0 1 2" and row["interval_over"] == curve_table.BOTH
    assert row["verdict"] == ("higher" if row["diff_low"] > 0 else "lower" if row["diff_high"] < 0 else "inconclusive")
    large = table[table["eps_255"] == 64.0]
    assert (large["mean"] == 0).all() and large["large"].all() and (large["train_eps_255"] == 8).all()
    assert set(table.loc[~table["part"], "verdict"].fillna("")) == {""}  # base rows have no Δ
    text = out["curve_md"].read_text()
    assert "## CIFAR-10 (ResNet-18)" in text and "64/255 (large)" in text and "PART (s = 1) − AT" in text


def test_one_seed_shows_the_test_sample_interval_and_stays_inconclusive(tmp_path):
    results_dir = tmp_path / "results"
    cfg = {**grid_cfg(results_dir), "seeds": [0]}
    write_grid(results_dir, cfg)
    g = grid.load(cfg)
    runs = {run.variant: run for run in g.main}
    at = write_curve(results_dir, runs["at"], np.stack([first(800), first(400), first(0)]))
    part = write_curve(results_dir, runs["part_s1"], np.stack([first(850), first(300), first(0)]))
    table = curve_table.curve_table(g, [at, part]).set_index(["variant", "eps_255"])
    t = scipy_stats.t.ppf(0.975, N - 1)
    for variant, eps, k in (("at", 0.0, 800), ("part_s1", 8.0, 300)):
        p = k / N
        half = t * math.sqrt(1e4 * p * (1 - p) * N / (N - 1) / N)
        r = table.loc[(variant, eps)]
        assert r["mean"] == pytest.approx(100 * p)
        assert (r["ci_low"], r["ci_high"]) == pytest.approx((100 * p - half, 100 * p + half))
        assert r["interval_over"] == curve_table.EXAMPLES_ONLY and math.isnan(r["std"])
    # Δ at ε = 8: 100 examples −100, the rest 0 → mean −10, paired test-sample interval
    d = table.loc[("part_s1", 8.0)]
    diffs = np.where(np.arange(N) < 300, 0, np.where(np.arange(N) < 400, -100.0, 0))
    half = t * math.sqrt(diffs.var(ddof=1) / N)
    assert d["diff"] == pytest.approx(-10.0)
    assert (d["diff_low"], d["diff_high"]) == pytest.approx((-10 - half, -10 + half))
    assert d["verdict"] == "inconclusive" and "test sample alone shows lower" in d["detail"]
    assert table.loc[("part_s1", 0.0), "detail"].endswith("shows higher")


def test_curves_of_different_settings_are_refused(curves):
    g, paths, _ = curves
    run = g.run_at(paths[0])
    other = [{"eps_255": e, "eps": e / 255, "large": e == 64.0, "steps": 7} for e in EPS]
    write_curve(g.results_dir, run, np.zeros((3, N), bool), other)
    with pytest.raises(MismatchError, match="steps"):
        curve_table.curve_table(g, paths)


def test_the_figure_has_a_panel_per_family_bands_and_the_training_eps(curves, tmp_path):
    g, paths, _ = curves
    table = curve_table.curve_table(g, paths)
    fig = plots.curve_figure(table, g.variants)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == ["AT", "TRADES"]
    assert len(axes[0].lines) >= 3 and axes[0].collections  # AT, PART (s = 1), PART (s = 10) with bands
    xs = {float(x) for line in axes[0].lines for x in np.atleast_1d(line.get_xdata())}
    assert 64.0 not in xs and 8.0 in xs  # the large ε is written in the panel, not drawn
    assert any(t.get_text() == "not drawn: large ε = 64/255, mean accuracy 0.0%" for t in axes[0].texts)
    written = plots.plot_curve(table, g.variants, tmp_path / "figures" / grid.curve_figure_stem("cifar10"))
    assert [p.name for p in written] == ["robustness_curve_cifar10.png", "robustness_curve_cifar10.pdf"]
    assert all(p.stat().st_size > 1000 for p in written)


def sanity_entry(run: grid.Run, run_dir: Path, statuses: dict[str, str]) -> dict:
    checks = {name: {"status": s, "measure": 0.5 if s != "not run" else None, "threshold": 1.0,
                     "message": f"{name} numbers"} for name, s in statuses.items()}
    entry = curve_entry(run, run_dir, [])
    return {**entry, "evaluation": "sanity", "settings": {"kind": "sanity", "eps_255": 8.0,
                                                          "attacks": {"transfer": {"source": f"other/{run.seed}"}}},
            "status": "warn" if "warn" in statuses.values() else "pass", "checks": checks,
            "accuracy": {"natural": 80.0, "pgd20": 40.0, "square": 45.0}, "rows": ["natural", "pgd20", "square"]}


def test_sanity_table_has_a_row_per_model_and_a_column_per_check(curves, tmp_path):
    g, _, _ = curves
    paths = []
    for run in g.main[:2]:
        run_dir = g.run_dir(run)
        statuses = {"convergence": "pass", "black_box": "warn" if run.seed == 1 else "pass", "large_eps": "pass",
                    "transfer": "not run"}
        results.write_result(run_dir, "sanity", sanity_entry(run, run_dir, statuses), np.ones((3, N), bool),
                             np.arange(N), arrays={"rows": np.array(["natural", "pgd20", "square"])})
        paths.append(g.check_result(run, "sanity"))
    out = curve_table.write_sanity_table(g, paths, tmp_path / "tables")
    table = pd.read_csv(out["sanity_csv"])
    assert list(table["seed"]) == [0, 1] and list(table["status"]) == ["pass", "warn"]
    assert list(table["black_box_status"]) == ["pass", "warn"] and list(table["transfer_status"]) == ["not run"] * 2
    assert table["pgd20_accuracy"].tolist() == [40.0, 40.0] and table["transfer_accuracy"].isna().all()
    text = out["sanity_md"].read_text()
    assert "pass (0.50 ≤ 1)" in text and "warn (0.50 > 1)" in text and "1 warning(s):" in text
    assert "black_box numbers" in text


def test_difference_verdicts():
    up = stats.paired_difference(np.stack([first(600)] * 3), np.stack([first(500), first(505), first(495)]))
    assert compare.difference_verdict(up, 0.95, "x")[0] == "higher"
    assert compare.difference_verdict(None, 0.95, "x") == ("no pair", "")


def test_the_results_readme_shows_the_checks_and_the_curve(curves):
    g, paths, _ = curves
    assert report.checks_section(g.results_dir) == []
    tables = g.results_dir / "tables"
    curve_table.write_curve_table(g, paths, tables)
    plots.plot_curve(curve_table.curve_table(g, paths), g.variants,
                     g.results_dir / "figures" / grid.curve_figure_stem("cifar10"))
    run = g.main[0]
    statuses = dict.fromkeys(curve_table.CHECK_COLUMNS, "pass")
    results.write_result(g.run_dir(run), "sanity", sanity_entry(run, g.run_dir(run), statuses), np.ones((3, N), bool),
                         np.arange(N), arrays={"rows": np.array(["natural", "pgd20", "square"])})
    curve_table.write_sanity_table(g, [g.check_result(run, "sanity")], tables)
    text = "\n".join(report.checks_section(g.results_dir))
    assert "## Evaluation checks" in text and "| Dataset | Method | Seed |" in text and "0 warning(s)." in text
    assert "[tables/robustness_curve.md](tables/robustness_curve.md)" in text
    assert "![robustness_curve_cifar10](figures/robustness_curve_cifar10.png)" in text


def test_the_curve_figure_annotations_say_what_is_drawn(curves):
    """The large-ε text gives the means as they are (a mean over seeds bounds no single model), and each
    training-ε label lies inside its own panel, beside its line (one at the axis' right end included)."""
    g, paths, _ = curves
    table = curve_table.curve_table(g, paths)
    large = table["large"] & (table["variant"] == "part_s1")
    table.loc[large, "mean"] = 0.5  # one seed's model left examples correct
    fig = plots.curve_figure(table, g.variants)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in (ax for ax in fig.axes if ax.get_title()):
        texts = {t.get_text(): t for t in ax.texts}
        label = texts["training ε = 8/255"]
        inside, line_x = ax.get_window_extent(renderer), ax.transData.transform((8.0, 0))[0]
        box = label.get_window_extent(renderer)
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, ax.get_title()  # not in the next panel
        assert min(abs(box.x0 - line_x), abs(box.x1 - line_x)) < 10  # beside its line
        means = "0.0–0.5%" if ax.get_title() == "AT" else "0.0%"
        assert f"not drawn: large ε = 64/255, mean accuracy {means}" in texts, texts
