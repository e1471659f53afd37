"""The tables of the grid: mean ± std over seeds, the paper's layout, the paper beside ours, the claim.

Every run is synthetic but in the real layout: run.json, model.pt, eval/<attack>.json +
.correct.npz and a metrics.json made by ``part.evaluation.results.build_metrics`` and validated against its
schema. Accuracies are on 1000 examples, so each is a multiple of 0.1 and the expected means, stds and
differences below are computed by hand.
"""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import numpy as np
import pandas as pd
import pytest
import yaml

from scipy import stats as scipy_stats

from part.analysis import aggregate, compare, stats
from part.attacks.suite import attack_specs
from part.base import files, provenance, grid
from part.base.grid import Run
from part.evaluation.results import build_metrics, file_sha256, metrics_schema

ROOT = Path(__file__).resolve().parents[1]
N = 1000
ENVIRONMENT = provenance.environment()
AA_EXTRA = {"package": "pyautoattack", "package_version": "0.2.0", "version": "standard", "batch_size": 500,
            "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "apgd-ce": {}, "apgd-t": {}, "fab-t": {}, "square": {}}
RELEASE_AA_EXTRA = {"package": "torchattacks", "package_version": "3.5.1",
                    "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"]}
EXTRA = {"aa": AA_EXTRA, "aa_release": RELEASE_AA_EXTRA}

VARIANTS = {
    "at": {"label": "AT", "family": "AT", "run": {"method": "at"}},
    "part_s1": {"label": "PART (s = 1)", "family": "AT", "run": {"method": "part", "mask": {"refresh_every": 1}}},
    "part_s10": {"label": "PART (s = 10)", "family": "AT", "run": {"method": "part", "mask": {"refresh_every": 10}}},
    "part_s5": {"label": "PART (s = 5)", "family": "AT", "run": {"method": "part", "mask": {"refresh_every": 5}}},
    "trades": {"label": "TRADES", "family": "TRADES", "run": {"method": "trades"}},
    "part_trades_s1": {"label": "PART-T (s = 1)", "family": "TRADES",
                       "run": {"method": "part_trades", "mask": {"refresh_every": 1}}},
}

# natural and AA per seed (0, 1, 2); PGD-20 = AA + 2, MMA = AA + 0.5. part_s5 has no results at all.
ACCURACY = {
    "at": {"natural": [82.4, 82.6, 82.8], "aa": [41.5, 41.7, 41.6]},  # 82.60 ± 0.20, 41.60 ± 0.10
    "part_s1": {"natural": [83.3, 83.5, 83.4], "aa": [41.8, 41.6, 41.7]},  # 83.40 ± 0.10 (+0.80), 41.70 (+0.10)
    "part_s10": {"natural": [83.9, 83.7, 83.8], "aa": [40.9, 41.1, 41.0]},  # 83.80 (+1.20), 41.00 (−0.60)
    "trades": {"natural": [78.2, 78.0, 78.1], "aa": [45.0, 45.0, 45.0]},  # 78.10 ± 0.10, 45.00 ± 0.00
    "part_trades_s1": {"natural": [78.0, 77.9, 78.1], "aa": [46.0, 46.2, 45.8]},  # 78.00 (−0.10), 46.00 (+1.00)
}


def grid_cfg(results: Path, dataset: str = "cifar10", arch: str = "resnet18") -> dict:
    """A workflow config (config.yaml's data and resources) with this module's grid and no experiments."""
    cfg = {k: v for k, v in yaml.safe_load((ROOT / "config.yaml").read_text()).items() if k != "experiments"}
    return {**cfg, "results_dir": str(results), "datasets": {dataset: {"arch": arch}}, "variants": VARIANTS,
            "seeds": [0, 1, 2], "run": {"device": "cpu"},
            "evaluation": {"attacks": ["natural", "pgd20", "mma", "aa"], "batch_size": 500, "n_examples": None,
                           "aa_n_examples": None}}


def write_run(results: Path, run: Run, accuracy: dict[str, float], *, settings: dict | None = None,
              n_examples: dict[str, int] | None = None, config: dict | None = None) -> Path:
    """A finished, evaluated run directory; ``settings`` / ``n_examples`` / ``config`` override per attack / key."""
    run_dir = results / run.path
    (run_dir / "eval").mkdir(parents=True)
    files.write_text(run_dir / "model.pt", run.path)  # only hashed by build_metrics
    files.write_json(run_dir / "run.json", {"config": {**run.config.to_dict(), **(config or {})}})
    specs = attack_specs(8 / 255, 2 / 255)
    sha = file_sha256(run_dir / "model.pt")
    entries = {}
    for attack, acc in accuracy.items():
        n = (n_examples or {}).get(attack, N)
        n_correct = round(acc * n / 100)
        with open(run_dir / "eval" / f"{attack}.correct.npz", "wb") as f:
            np.savez_compressed(f, correct=np.arange(n) < n_correct, index=np.arange(n))
        spec = {**specs[attack], **EXTRA.get(attack, {}), **(settings or {}).get(attack, {})}
        entries[attack] = {
            "attack": attack, "accuracy": 100 * n_correct / n, "n_correct": n_correct, "n_examples": n,
            "natural_accuracy": accuracy["natural"], "seconds": 1.0, "images_per_second": float(n), "settings": spec,
            "precision": "fp32", "batch_size": 500, "device": "cpu", "split": "test",
            "subset": f"first {n} of {run.dataset} test",
            "run": {"dataset": run.dataset, "model": run.arch, "method": run.config.method, "seed": run.seed},
            "checkpoint": "last", "checkpoint_sha256": sha, "correct_file": f"eval/{attack}.correct.npz",
            "correct_sha256": file_sha256(run_dir / "eval" / f"{attack}.correct.npz"), "created": "2024-07-01T00:00:00+00:00",
            "environment": ENVIRONMENT}
    metrics = build_metrics(run_dir, entries)
    jsonschema.validate(metrics, metrics_schema())
    files.write_json(run_dir / "metrics.json", metrics)
    return run_dir / "metrics.json"


def seed_accuracy(variant: str, seed: int) -> dict[str, float]:
    nat, aa = ACCURACY[variant]["natural"][seed], ACCURACY[variant]["aa"][seed]
    return {"natural": nat, "pgd20": round(aa + 2, 1), "mma": round(aa + 0.5, 1), "aa": aa,
            "aa_release": round(aa + 0.3, 1)}


def write_grid(results: Path, cfg: dict, skip: tuple[tuple[str, int], ...] = ()) -> dict[tuple[str, int], Path]:
    return {(run.variant, run.seed): write_run(results, run, seed_accuracy(run.variant, run.seed))
            for run in grid.load(cfg).main if run.variant in ACCURACY and (run.variant, run.seed) not in skip}


@pytest.fixture
def full(tmp_path):
    """Every run but part_s5's, all seeds: the tables written."""
    cfg = grid_cfg(tmp_path / "results")
    write_grid(tmp_path / "results", cfg)
    return cfg, tables(cfg, tmp_path / "tables")


def tables(cfg: dict, out_dir: Path) -> dict[str, Path]:
    """The tables of the runs that have metrics (as a partial grid outside the workflow is tabulated)."""
    g = grid.load(cfg)
    return aggregate.write_tables(g, aggregate.existing_metrics(g), out_dir)


def cell(main: pd.DataFrame, variant: str, column: str):
    return main.set_index("variant").loc[variant, column]


def text_of(markdown: str) -> str:
    """Markdown with its column padding collapsed, so rows can be matched as written by hand."""
    return re.sub(r" {2,}", " ", markdown)


def text(path: Path) -> str:
    return text_of(path.read_text())


# --- the main table -------------------------------------------------------------------------------------------

def test_mean_std_diff_and_bold_against_hand_computed_values(full):
    _, paths = full
    assert set(paths) == set(aggregate.OUTPUTS) and all(p.is_file() for p in paths.values())
    main = pd.read_csv(paths["main_csv"], keep_default_na=False, na_values=[""])
    assert list(main["variant"]) == list(VARIANTS)  # config order
    assert list(main.columns[:6]) == ["dataset", "arch", "variant", "method", "family", "base_variant"]
    assert cell(main, "at", "natural_mean") == pytest.approx(82.6) and cell(main, "at", "natural_std") == pytest.approx(0.2)
    assert cell(main, "part_s1", "natural_diff") == pytest.approx(0.8)
    assert cell(main, "part_s10", "aa_diff") == pytest.approx(-0.6)
    assert cell(main, "part_trades_s1", "natural_diff") == pytest.approx(-0.1)
    assert cell(main, "part_s1", "base_variant") == "at" and cell(main, "part_trades_s1", "base_variant") == "trades"
    assert np.isnan(cell(main, "at", "natural_diff"))
    # bold: the best mean of each family per column
    assert cell(main, "part_s10", "natural_best") and not cell(main, "part_s1", "natural_best")
    assert cell(main, "part_s1", "aa_best") and cell(main, "trades", "natural_best")
    assert cell(main, "part_trades_s1", "aa_best") and not cell(main, "trades", "aa_best")
    # worst case: per example (prefix-correct examples, so the minimum over the attacks)
    assert cell(main, "at", "worst_case_mean") == pytest.approx(41.6)
    # ... with its own interval, from the per-example flags under every attack, like every other column
    assert cell(main, "at", "worst_case_ci_low") < 41.6 < cell(main, "at", "worst_case_ci_high")
    assert cell(main, "at", "worst_case_n_examples") == cell(main, "at", "aa_n_examples")
    assert (main["natural_n_seeds"] == [3, 3, 3, 0, 3, 3]).all()
    md = text(paths["main_md"])
    assert "| CIFAR-10 (ResNet-18) | AT " in md
    assert "**83.80** ± 0.10 (+1.20)" in md and "83.40 ± 0.10 (+0.80)" in md and "41.00 ± 0.10 (−0.60)" in md
    assert "78.00 ± 0.10 (−0.10)" in md and "**45.00** ± 0.00" not in md and "45.00 ± 0.00" in md
    assert "sample standard deviation (ddof = 1) over 3 seeds (0, 1, 2)" in md


def test_a_row_without_results_and_a_missing_seed_are_marked(tmp_path):
    cfg = grid_cfg(tmp_path / "results")
    write_grid(tmp_path / "results", cfg, skip=(("part_s1", 2), ("part_s10", 1), ("part_s10", 2)))
    paths = tables(cfg, tmp_path / "tables")
    main = pd.read_csv(paths["main_csv"], dtype={"natural_missing_seeds": str}, keep_default_na=False)
    assert cell(main, "part_s1", "natural_n_seeds") == 2 and cell(main, "part_s1", "natural_missing_seeds") == "2"
    assert cell(main, "part_s5", "aa_n_seeds") == 0 and cell(main, "part_s5", "aa_missing_seeds") == "0 1 2"
    assert cell(main, "at", "natural_missing_seeds") == ""
    assert float(cell(main, "part_s1", "natural_mean")) == pytest.approx(83.4)  # (83.3 + 83.5) / 2, not silently 3 seeds
    md = text(paths["main_md"])
    assert "83.40 ± 0.14† (+0.80)" in md and "| **83.90**† (+1.30) |" in md  # one seed: its value alone
    assert "† CIFAR-10 (ResNet-18), PART (s = 10): seeds 1, 2 missing in every column" in md
    assert "† CIFAR-10 (ResNet-18), PART (s = 1): seed 2 missing in every column" in md
    assert "† CIFAR-10 (ResNet-18), PART (s = 5): seeds 0, 1, 2 missing in every column" in md
    assert "| | PART (s = 5) | — | — | — | — | — |" in md
    tex = paths["main_tex"].read_text()
    assert "83.40 $\\pm$ 0.14$^\\dagger$ (+0.80)" in tex and "$^\\dagger$ CIFAR-10 (ResNet-18), PART (s = 1)" in tex
    summary = pd.read_csv(paths["summary"], keep_default_na=False)
    assert set(summary.loc[summary["variant"] == "part_s1", "n_seeds"]) == {2}
    versus = pd.read_csv(paths["paper_csv"], keep_default_na=False)
    assert set(versus.loc[versus["ours_variant"] == "part_s1", "ours_missing_seeds"].astype(str)) == {"2"}
    assert set(versus.loc[versus["ours_variant"] == "part_s10", "reproduction"]) == {"inconclusive"}  # 1 seed
    assert ("| 83.90† | PART (s = 10) | +0.13 | inconclusive (one seed: seed-to-seed variation unknown (run ≥ 2 "
            "seeds)) | |") in text(paths["paper_md"])
    verdicts = pd.read_csv(paths["verdicts_csv"], keep_default_na=False).set_index("variant")
    assert verdicts.loc["part_s1", "n_seeds"] == 2 and not verdicts.loc["part_s1", "complete"]
    # one seed: no interval, so no verdict either way, whatever the means say
    assert verdicts.loc["part_s10", "verdict"] == "inconclusive" and verdicts.loc["part_s10", "natural_low"] == ""
    assert "one seed" in verdicts.loc["part_s10", "detail"]
    assert "| PART (s = 10) | +1.50 | −0.60 | inconclusive (one seed" in text(paths["verdicts_md"])


def test_latex_is_structurally_sound(full):
    _, paths = full
    tex = paths["main_tex"].read_text()
    stripped = tex.replace("\\{", "").replace("\\}", "")
    depth = 0
    for ch in stripped:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert depth == 0
    assert re.findall(r"\\(begin|end)\{(\w+)\}", tex) == [("begin", "table"), ("begin", "tabular"),
                                                          ("end", "tabular"), ("end", "table")]
    assert tex.index("\\toprule") < tex.index("\\midrule") < tex.index("\\bottomrule")
    body = tex[tex.index("\\toprule"):tex.index("\\bottomrule")]
    rows = [line for line in body.splitlines() if line.endswith("\\\\")]
    assert len(rows) == 1 + len(VARIANTS)  # header + one per variant
    assert all(len(re.findall(r"(?<!\\)&", row)) == 2 + 5 for row in rows)  # Dataset, Method, 5 attacks + worst
    assert "\\multirow{6}{*}{CIFAR-10 (ResNet-18)}" in tex and "\\cmidrule(l){2-8}" in tex
    assert "\\textbf{83.80} $\\pm$ 0.10 (+1.20)" in tex and "41.00 $\\pm$ 0.10 ($-$0.60)" in tex
    assert "\\caption{" in tex and "ddof = 1" in tex and "±" not in tex and "†" not in tex


# --- mismatched settings ----------------------------------------------------------------------------------------

def rewrite(paths: dict, key: tuple[str, int], cfg: dict, **overrides) -> Path:
    """Replace one run of the grid by the same run evaluated or trained under other settings."""
    variant, seed = key
    run = next(r for r in grid.load(cfg).main if (r.variant, r.seed) == key)
    for f in sorted((Path(cfg["results_dir"]) / run.path).rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    return write_run(Path(cfg["results_dir"]), run, seed_accuracy(variant, seed), **overrides)


@pytest.mark.parametrize("overrides, setting", [
    ({"settings": {"pgd20": {"steps": 10}}}, "settings.steps: 20 vs 10"),
    ({"settings": {"aa": {"eps": 4 / 255}}}, "settings.eps"),
    ({"n_examples": {"aa": 500}}, "n_examples: 1000 vs 500"),
    ({"config": {"epochs": 3}}, "epochs: 80 vs 3"),
])
def test_mismatched_settings_raise_naming_the_files(tmp_path, overrides, setting):
    cfg = grid_cfg(tmp_path / "results")
    paths = write_grid(tmp_path / "results", cfg)
    bad = rewrite(paths, ("part_s1", 1), cfg, **overrides)
    with pytest.raises(aggregate.MismatchError) as err:
        tables(cfg, tmp_path / "tables")
    message = str(err.value)
    assert setting in message and str(bad) in message
    assert str(paths["part_s1", 0]) in message or str(paths["at", 0]) in message
    assert not (tmp_path / "tables").exists()


def test_a_seed_evaluated_with_other_attacks_is_a_mismatch(tmp_path):
    cfg = grid_cfg(tmp_path / "results")
    paths = write_grid(tmp_path / "results", cfg)
    run = next(r for r in grid.load(cfg).main if (r.variant, r.seed) == ("at", 2))
    for f in sorted((tmp_path / "results" / run.path).rglob("*"), reverse=True):
        f.rmdir() if f.is_dir() else f.unlink()
    write_run(tmp_path / "results", run, {k: v for k, v in seed_accuracy("at", 2).items() if k != "aa"})
    with pytest.raises(aggregate.MismatchError, match="evaluated attacks") as err:
        tables(cfg, tmp_path / "tables")
    assert str(paths["at", 0]) in str(err.value)


def test_collect_always_checks_what_it_reads(tmp_path):
    """``collect`` (the experiments' tables read through it) refuses what the main table refuses: seeds of a
    row trained with other settings are not averaged."""
    cfg = grid_cfg(tmp_path / "results")
    write_grid(tmp_path / "results", cfg)
    g = grid.load(cfg)
    per_seed = aggregate.collect(g, aggregate.existing_metrics(g))
    assert len(per_seed) == 5 * 3 * 6 and set(per_seed["attack"]) == {"natural", "pgd20", "mma", "aa", "aa_release",
                                                                       "worst_case"}
    summary = aggregate.summarise(per_seed, cfg["seeds"])
    assert summary.loc[(summary["variant"] == "at") & (summary["attack"] == "natural"), "cell"].item() == "82.60 ± 0.20"
    rewrite({}, ("part_s1", 1), cfg, config={"epochs": 3})
    with pytest.raises(aggregate.MismatchError, match="the seeds of row cifar10/resnet18/part_s1 .*epochs: 80 vs 3"):
        aggregate.collect(g, aggregate.existing_metrics(g))


def test_every_declared_metrics_file_is_read_or_the_table_stops(tmp_path):
    """The workflow declares the grid's metrics files; a missing one is an error, never a silently shorter row."""
    cfg = grid_cfg(tmp_path / "results")
    paths = write_grid(tmp_path / "results", cfg)
    g = grid.load(cfg)
    declared = [g.run_dir(r) / "metrics.json" for r in g.main]  # part_s5 has none
    with pytest.raises(FileNotFoundError, match="part_s5/seed0/metrics.json: missing; the table reads it"):
        aggregate.write_tables(g, declared, tmp_path / "tables")
    assert not (tmp_path / "tables").exists()
    elsewhere = tmp_path / "other" / "cifar10/resnet18/at/seed0/metrics.json"
    with pytest.raises(grid.ConfigError, match="not in a run directory of this grid"):
        aggregate.write_tables(g, [*paths.values(), elsewhere], tmp_path / "tables")


def test_a_family_with_two_base_variants_is_ambiguous(tmp_path):
    cfg = grid_cfg(tmp_path / "results")
    at_long = {"label": "AT (long)", "family": "AT", "run": {"method": "at", "epochs": 100}}
    cfg["variants"] = {**VARIANTS, "at_long": at_long}
    with pytest.raises(ValueError, match="family 'AT' has 2 variants running 'at' \\(at, at_long\\)"):
        aggregate.variant_table(grid.load(cfg))


# --- the paper beside ours, and its claim ------------------------------------------------------------------------

def column_estimates(attack: str) -> dict[str, stats.Crossed]:
    """Our cells of one column as the tables must estimate them: flags rebuilt from ACCURACY (the first n correct,
    as ``write_run`` writes them), the column's base rows pooled together and its PART rows together."""
    rows = {v: stats.accuracy(np.stack([np.arange(N) < round(seed_accuracy(v, seed)[attack] * N / 100)
                                        for seed in range(len(acc["natural"]))]))
            for v, acc in ACCURACY.items()}
    out = {}
    for part in (False, True):
        group = [v for v in rows if v.startswith("part") == part]
        out |= dict(zip(group, stats.pool([rows[v] for v in group])))
    return out


def test_paper_cells_are_matched_by_run_config_and_judged_as_a_two_sample_question(full):
    _, paths = full
    versus = pd.read_csv(paths["paper_csv"], keep_default_na=False, na_values=[""])
    assert len(versus) == 27 * 4 // 3  # every cell of the paper's CIFAR-10 block (9 rows x 4 attacks)
    v = versus.set_index(["paper_method", "attack"])
    row = v.loc[("AT", "natural")]  # ours 82.60 ± 0.20 vs 82.58 ± 0.14, on 1000 of CIFAR-10's 10 000 test images
    assert row["ours_variant"] == "at" and row["diff"] == pytest.approx(0.02) and row["reproduction"] == "inconclusive"
    # the advice stays inside the test set, though the runs set no evaluation.n_examples
    advised = int(re.search(r"≈ (\d+) Natural examples \(now 1000\)", row["reproduction_detail"]).group(1))
    assert 1000 < advised <= 10_000
    assert v.loc[("PART-T (s = 1)", "natural"), "ours_variant"] == "part_trades_s1"
    assert v.loc[("MART", "aa"), "status"] == "no such variant in this grid"
    assert v.loc[("PART-T (s = 10)", "aa"), "status"] == "no such variant in this grid"
    assert set(versus.loc[versus["status"] == "compared", "ours_variant"]) == set(ACCURACY)
    # the paper's CIFAR-10 natural stds are homogeneous (Bartlett p = 0.87): one pooled std, 9 × 2 df
    natural_stds = [0.14, 0.26, 0.15, 0.15, 0.31, 0.16, 0.28, 0.10, 0.15]
    assert row["paper_pooled_std"] == pytest.approx(np.sqrt(np.mean(np.square(natural_stds))), abs=1e-4)
    assert row["paper_df"] == 18
    # PART (s = 10), AA under the paper's protocol (aa_release): ours 41.30 ± 0.10 vs 41.41 ± 0.14 — on this test
    # set, of which 1000 of 10 000 examples were evaluated; our standard AA (41.00) beside it
    row = v.loc[("PART (s = 10)", "aa")]
    assert row["ours_attack"] == "aa_release" and row["ours_mean"] == pytest.approx(41.3)
    assert (row["standard_aa_mean"], row["standard_aa_std"], row["standard_aa_n_seeds"]) == pytest.approx((41.0, 0.1, 3))
    assert row["standard_aa_ci_low"] < 41.0 < row["standard_aa_ci_high"]
    assert v.loc[("PART (s = 10)", "pgd20"), "ours_attack"] == "pgd20" and pd.isna(
        v.loc[("PART (s = 10)", "pgd20"), "standard_aa_mean"])
    ours = stats.on_test_set(column_estimates("aa_release")["part_s10"], 10_000)
    assert ours.pooled == 3 and ours.seed_df == 6  # the AA column's three PART rows of three seeds
    assert (row["ours_ci_low"], row["ours_ci_high"]) == pytest.approx(stats.interval(ours), abs=1e-4)
    assert row["interval_on"] == "this test set"
    paper_aa = stats.Versus(ours, 41.41, row["paper_pooled_std"], 3, row["paper_df"])
    assert (row["diff_low"], row["diff_high"]) == pytest.approx(stats.interval(paper_aa), abs=1e-4)
    assert row["diff_low"] < -1 and row["diff_high"] > 1 and row["reproduction"] == "inconclusive"
    assert row["min_detectable"] == pytest.approx(stats.min_detectable(paper_aa), abs=1e-4)
    row = v.loc[("TRADES", "pgd20")]  # 47.00 vs 48.28 ± 0.05: 1.28 points off, but the other 9000 images are unseen
    assert row["diff_low"] < -1 < row["diff_high"] and row["reproduction"] == "inconclusive"
    md = text(paths["paper_md"])
    assert ("| CIFAR-10 (ResNet-18) | TRADES | PGD-20 | 48.28 ± 0.05 | 47.00 ± 0.00 | TRADES | −1.28 [−4.23, +1.67] "
            "| inconclusive (to show it beyond ± 1: not within 1000 seeds or the test set at the observed spread) |") in md
    assert "Of 20 compared cells: 0 reproduced, 0 differs, 20 inconclusive (tolerance ± 1 points" in md
    assert md.endswith("Table-wide (Holm over 20 judged cells, family-wise error ≤ 2.5 %): ours differs from the "
                       "paper beyond ± 1 in 0 of 20.\n")
    assert "Not in this grid: SVHN (ResNet-18), TinyImageNet-200 (WRN-34-10)." in md
    assert "Evaluation budget: 3 seeds per cell (0, 1, 2); test examples per attack (the first N of the test " \
           "split): Natural 1000, PGD-20 1000, MMA 1000, AA 1000, AA (release) 1000; AutoAttack seed 0." in md
    assert "| PART (s = 10) | AA (release) | 41.41 ± 0.14 | 41.30 ± 0.10 | PART (s = 10) |" in md
    assert md.count("| 41.00 ± 0.10 |") == 1  # our standard AA of that row, beside
    assert ("the paper's AA is compared with `aa_release`, and our standard AA is shown beside it "
            "(*Ours, standard AA*)") in md


def test_the_claims_tolerance_is_configured_and_its_sensitivity_stated(full, tmp_path):
    """``statistics.claim.aa_tolerance`` moves the AA line; the table states the verdicts at the other tolerances."""
    cfg, paths = full
    md = text(paths["verdicts_md"])
    assert md.startswith("# The paper's claim, as this pipeline reads it: PART raises natural accuracy without "
                         "lowering AA by more than 0.5 points")
    assert "Δ AA ≥ −0.5 points (`statistics.claim.aa_tolerance`" in md
    # at 0: PART (s = 1)'s AA +0.10 [−0.21, +0.41] straddles 0 (open), PART (s = 10)'s −0.60 [−1.04, −0.16] lies
    # below it; at 1 the latter straddles −1
    table, paper = _claim_inputs(cfg)
    others = compare.claim_sensitivity(table, paper, compare.Settings(claim=compare.Claim(0.0)), {"cifar10": N})
    assert set(others) == {0.5, 1.0} and (others[1.0]["aa_tolerance"] == 1.0).all()
    assert others[1.0].set_index("variant").loc["part_s10", "verdict"] == "inconclusive"
    line = next(line for line in md.splitlines() if line.startswith("Sensitivity"))
    assert line.startswith("Sensitivity to the AA tolerance (here 0.5): at 0 points: ours ")
    assert "; at 1 point: ours " in line
    assert (pd.read_csv(paths["verdicts_csv"])["aa_tolerance"] == 0.5).all()
    cfg = {**cfg, "statistics": {**cfg.get("statistics", {}), "claim": {"aa_tolerance": 0.0}}}
    zero_paths = tables(cfg, tmp_path / "zero")
    verdicts = pd.read_csv(zero_paths["verdicts_csv"], keep_default_na=False).set_index("variant")
    assert (pd.to_numeric(verdicts["aa_tolerance"]) == 0).all()
    assert verdicts.loc["part_s1", "verdict"] == "inconclusive" and verdicts.loc["part_s10", "verdict"] == "does not hold"
    assert verdicts.loc["part_s10", "detail"] == "Δ AA < +0.00"
    zero_md = text(zero_paths["verdicts_md"])
    assert "without lowering AA by more than 0 points" in zero_md
    assert "Sensitivity to the AA tolerance (here 0): at 0.5 points: ours 1 holds," in zero_md


def _claim_inputs(cfg: dict) -> tuple:
    g = grid.load(cfg)
    records = aggregate.read_metrics(g, aggregate.existing_metrics(g), g.variants)
    per_seed = aggregate.per_seed_frame(records, g.variants)
    summary = aggregate.summarise(per_seed, cfg["seeds"])
    table = aggregate.cells(summary, aggregate.variant_table(g), aggregate.table_columns(cfg, summary), cfg["seeds"],
                            aggregate.correct_flags(records), 0.95)
    return table, compare.paper_cells(compare.load_reference("paper_table1"))


def test_without_the_release_protocol_the_paper_aa_is_not_judged(tmp_path):
    """Standard AA is stronger than the paper's AA: a gap is expected by construction, so no verdict is given."""
    cfg = grid_cfg(tmp_path / "results")
    cfg["evaluation"] = {**cfg["evaluation"], "attacks": ["natural", "pgd20", "mma", "aa"]}
    for run in grid.load(cfg).main:
        if run.variant in ACCURACY:
            write_run(tmp_path / "results", run, {k: v for k, v in seed_accuracy(run.variant, run.seed).items()
                                                  if k != "aa_release"})
    paths = tables(cfg, tmp_path / "tables")
    versus = pd.read_csv(paths["paper_csv"], keep_default_na=False, na_values=[""])
    aa = versus[(versus["attack"] == "aa") & (versus["status"] == "compared")]
    assert len(aa) == 5 and set(aa["ours_attack"]) == {"aa"} and set(aa["reproduction"]) == {"protocols differ"}
    assert aa["standard_aa_mean"].isna().all()
    md = text(paths["paper_md"])
    assert "Of 20 compared cells: 0 reproduced, 0 differs, 15 inconclusive, 5 protocols differ" in md
    assert "Holm over 15 judged cells" in md  # the protocols' gaps are no cells of the family
    assert "the paper's AA cells are not judged (*protocols differ*)" in md and "Ours, standard AA" not in md


def test_an_explicit_n_examples_equal_to_the_test_set_is_the_whole_test_set(tmp_path):
    """``evaluation.n_examples: 10000`` on CIFAR-10 is all of it: ours is on the paper's test set, no sample term is
    left, and the comparison's table-wide line reads the cells under Holm's adjustment."""
    cfg = grid_cfg(tmp_path / "results")
    cfg["evaluation"] = {**cfg["evaluation"], "n_examples": 10_000}
    whole = dict.fromkeys(["natural", "pgd20", "mma", "aa", "aa_release"], 10_000)
    for run in grid.load(cfg).main:
        if run.variant in ACCURACY:
            write_run(tmp_path / "results", run, seed_accuracy(run.variant, run.seed), n_examples=whole)
    paths = tables(cfg, tmp_path / "tables")
    v = pd.read_csv(paths["paper_csv"], keep_default_na=False, na_values=[""]).set_index(["paper_method", "attack"])
    row = v.loc[("AT", "natural")]  # ours 82.60 ± 0.20 vs 82.58 ± 0.14, both on all 10 000 images
    assert row["interval_on"] == "this test set" and row["reproduction"] == "reproduced"
    row = v.loc[("TRADES", "pgd20")]  # 47.00 vs 48.28 ± 0.05: 1.28 points off, beyond ± 1 with confidence
    assert row["diff_high"] < -1 and row["reproduction"] == "differs" and row["p_differs"] < 0.025
    assert row["p_differs_holm"] == pytest.approx(stats.holm(v["p_differs"])[v.index.get_loc(("TRADES", "pgd20"))],
                                                  abs=1e-3)  # from the CSV's four decimals
    # one of twenty cells read alone: over the table, Holm's adjustment does not let it through
    assert row["p_differs_holm"] > 0.025
    assert text(paths["paper_md"]).endswith("Table-wide (Holm over 20 judged cells, family-wise error ≤ 2.5 %): ours "
                                            "differs from the paper beyond ± 1 in 0 of 20.\n")


def test_matching_reads_the_run_config_not_the_labels(tmp_path):
    cfg = grid_cfg(tmp_path / "results")
    cfg["variants"] = {"baseline": {**VARIANTS["at"], "label": "Madry"},
                       "ours": {**VARIANTS["part_s10"], "label": "PART, lazy maps"}}
    table = aggregate.cells(pd.DataFrame(columns=["dataset", "arch", "variant", "attack", "mean", "std", "n_seeds",
                                                  "missing_seeds"]),
                            aggregate.variant_table(grid.load(cfg)), ["natural", "aa", "worst_case"], cfg["seeds"], {}, 0.95)
    versus = compare.paper_vs_reproduction(table, compare.paper_cells(compare.load_reference("paper_table1")),
                                           compare.Settings(), {"cifar10": None})
    matched = versus.dropna(subset=["ours_variant"]).drop_duplicates("paper_method")
    assert dict(zip(matched["paper_method"], matched["ours_variant"])) == {"AT": "baseline", "PART (s = 10)": "ours"}
    assert set(versus.loc[versus["attack"].isin(["pgd20", "mma"]) & versus["ours_variant"].notna(), "status"]) == {
        "attack not evaluated"}
    assert set(versus.loc[versus["attack"] == "natural"].dropna(subset=["ours_variant"])["status"]) == {"no results yet"}


@pytest.mark.parametrize("low, high, natural, aa", [
    (0.01, 2.0, "pass", "pass"),
    (0.0, 2.0, "open", "pass"),  # natural must rise: an interval touching 0 does not say it did
    (-0.5, 0.1, "open", "pass"),  # AA may fall by 0.5: touching −0.5 is allowed
    (-0.6, 0.0, "fail", "open"),
    (-2.0, -0.51, "fail", "fail"),
    (-0.3, 0.4, "open", "pass"),
])
def test_criteria_read_the_interval(low, high, natural, aa):
    nat_c, aa_c = compare.Claim().criteria
    assert (nat_c.status(low, high), aa_c.status(low, high)) == (natural, aa)


def test_the_papers_own_numbers_judged_by_welch_intervals():
    """CIFAR-10 AT → PART (s = 1): Δ natural +0.84 (stds 0.26, 0.14), Δ AA +0.11 (stds 0.04, 0.22), 3 runs."""
    nat, aa = stats.Welch(0.84, 0.26, 0.14, 3), stats.Welch(0.11, 0.04, 0.22, 3)
    se = np.sqrt((0.26 ** 2 + 0.14 ** 2) / 3)
    df = se ** 4 / ((0.26 ** 2 / 3) ** 2 / 2 + (0.14 ** 2 / 3) ** 2 / 2)
    assert stats.interval(nat)[0] == pytest.approx(0.84 - scipy_stats.t.ppf(0.975, df) * se)
    assert compare.judge({"natural": nat, "aa": aa}, 0.95, compare._paper_advice) == ("holds", "")
    # the same differences from 2 runs a row cannot tell, and say how many runs would
    two_runs = {"natural": stats.Welch(0.84, 0.26, 0.14, 2), "aa": stats.Welch(0.11, 0.04, 0.22, 2)}
    verdict, detail = compare.judge(two_runs, 0.95, compare._paper_advice)
    assert verdict == "inconclusive"
    runs = r"≈ \d runs a setting \(assumed 2; 80 % power at the printed difference and stds\)"
    assert re.fullmatch(f"Δ natural: {runs}; Δ AA: {runs}", detail)
    assert compare.judge({"natural": stats.Welch(-0.5, 0.01, 0.01, 3), "aa": aa}, 0.95, compare._paper_advice) == (
        "does not hold", "Δ natural ≤ +0.00")


def test_claim_verdicts_for_ours_and_the_papers(full):
    _, paths = full
    verdicts = pd.read_csv(paths["verdicts_csv"], keep_default_na=False).set_index("variant")
    assert list(verdicts.index) == ["part_s1", "part_s10", "part_s5", "part_trades_s1"]
    assert verdicts.loc["part_s1", "verdict"] == "holds"
    # −0.60 [−1.04, −0.16] straddles −0.5, and the whole test set is used: more seeds alone cannot shrink the
    # test-sample term below the 0.1-point gap
    assert verdicts.loc["part_s10", "verdict"] == "inconclusive"
    assert verdicts.loc["part_s10", "detail"] == "Δ AA: not within 1000 seeds or the test set at the observed spread"
    assert float(verdicts.loc["part_s10", "aa_low"]) < -0.5 < float(verdicts.loc["part_s10", "aa_high"])
    assert verdicts.loc["part_trades_s1", "verdict"] == "inconclusive"
    assert verdicts.loc["part_s5", "verdict"] == "not measured"
    assert verdicts.loc["part_s5", "detail"] == "no results yet: PART (s = 5)"
    assert verdicts.loc["part_s1", "paper_verdict"] == "holds"  # +0.84 natural, +0.11 AA
    # AA −0.22 ± t(18) · 0.130 · √(2/3) = ± 0.22 with the column's pooled std (Bartlett p = 0.10): above −0.5
    assert verdicts.loc["part_s10", "paper_verdict"] == "holds"
    assert float(verdicts.loc["part_s10", "paper_aa_low"]) == pytest.approx(
        -0.22 - scipy_stats.t.ppf(0.975, 18) * np.sqrt(np.mean(np.square(
            [0.22, 0.04, 0.14, 0.12, 0.06, 0.04, 0.06, 0.04, 0.24])) * 2 / 3), abs=1e-4)
    assert float(verdicts.loc["part_s10", "paper_aa_diff"]) == pytest.approx(41.41 - 41.63)
    assert verdicts.loc["part_s5", "paper_verdict"] == "not in the paper"
    assert verdicts.loc["part_s5", "paper_detail"] == "no s = 5 row"
    assert float(verdicts.loc["part_s1", "natural_diff"]) == pytest.approx(0.8)
    assert int(verdicts.loc["part_s1", "aa_n_examples"]) == 1000 and int(verdicts.loc["part_s1", "n_seeds"]) == 3
    assert float(verdicts.loc["part_s1", "natural_seed_df"]) == 6  # three PART − base rows of 3 seeds, pooled
    md = text(paths["verdicts_md"])
    # ours: paired flags, the natural and AA columns' three PART − base rows pooled (Bartlett); the paper's: its
    # pooled CIFAR-10 natural std 0.2013 (18 df), Δ = +0.84 ± t(18) · 0.2013 · √(2/3) = ± 0.345
    assert ("| CIFAR-10 (ResNet-18) | AT | PART (s = 1) | +0.80 [+0.27, +1.33] | +0.10 [−0.21, +0.41] | holds "
            "| +0.84 [+0.49, +1.19] | +0.11 [−0.11, +0.33] | holds |") in md
    assert "Evaluation budget: 3 seeds per cell (0, 1, 2)" in md and "assuming 3 runs a row" in md
    # Holm over the table's rows: ours hold in one of three, the paper's in all three
    assert float(verdicts.loc["part_s1", "p_holds"]) < 0.025 and verdicts.loc["part_s5", "p_holds"] == ""
    p_values = pd.to_numeric(verdicts["p_holds"])
    assert np.allclose(pd.to_numeric(verdicts["p_holds_holm"]), stats.holm(p_values), atol=2e-4, equal_nan=True)
    assert float(verdicts.loc["part_s1", "p_holds_holm"]) >= float(verdicts.loc["part_s1", "p_holds"])
    assert "Table-wide (ours, Holm over 3 rows, family-wise error ≤ 2.5 %): the claim holds in 1 of 3: " \
           "CIFAR-10 (ResNet-18) PART (s = 1)." in md
    assert "Table-wide (the paper, Holm over 3 rows, family-wise error ≤ 2.5 %): the claim holds in 3 of 3" in md


def test_a_grid_the_paper_does_not_have_still_gets_both_tables(tmp_path):
    """The digits demo: no paper cell matches, the verdicts are ours alone."""
    cfg = grid_cfg(tmp_path / "results", dataset="digits", arch="small_cnn")
    write_grid(tmp_path / "results", cfg)
    paths = tables(cfg, tmp_path / "tables")
    assert pd.read_csv(paths["paper_csv"]).empty
    md = text(paths["paper_md"])
    assert "No cell of the paper matches this grid" in md and "this grid has digits (small CNN)" in md
    verdicts = pd.read_csv(paths["verdicts_csv"]).set_index("variant")
    assert verdicts.loc["part_s1", "verdict"] == "holds" and set(verdicts["paper_verdict"]) == {"not in the paper"}
    assert "Evaluation budget" in md
    assert "| digits (small CNN) | AT | 82.60 ± 0.20 |" in text(paths["main_md"])


def test_reference_tables_ship_with_the_package():
    table = compare.load_reference("paper_table1")
    assert len(table) == 27 and {"dataset", "arch", "method", "base", "s", "aa_mean", "aa_std"} <= set(table.columns)
    assert compare.load_reference("paper_figure1").set_index("low_budget_region").loc["upper_left", "natural"] == 78.0
    with pytest.raises(FileNotFoundError, match="part/reference/nope.csv"):
        compare.load_reference("nope")
    assert "reference/*.csv" in (Path(__file__).parents[1] / "pyproject.toml").read_text()


def test_a_grid_with_a_dataset_of_the_paper_and_one_without(tmp_path):
    """Only the paper's (dataset, arch) pairs are compared; both sides say what the other lacks."""
    cfg = grid_cfg(tmp_path / "results")
    cfg["datasets"] = {"cifar10": {"arch": "resnet18"}, "digits": {"arch": "small_cnn"}, "svhn": {"arch": "small_cnn"}}
    empty = pd.DataFrame(columns=["dataset", "arch", "variant", "attack", "mean", "std", "n_seeds", "missing_seeds"])
    table = aggregate.cells(empty, aggregate.variant_table(grid.load(cfg)), ["natural", "aa", "worst_case"], cfg["seeds"], {},
                            0.95)
    paper = compare.paper_cells(compare.load_reference("paper_table1"))
    versus = compare.paper_vs_reproduction(table, paper, compare.Settings(), {})
    assert set(versus["dataset"]) == {"cifar10"}  # SVHN with another architecture is not the paper's SVHN
    md = text_of(compare.versus_markdown(versus, table, paper, "Evaluation budget: none yet.", compare.Settings()))
    assert "Not in the paper: digits (small CNN), SVHN (small CNN)." in md
    assert "Not in this grid: SVHN (ResNet-18), TinyImageNet-200 (WRN-34-10)." in md
    tex = aggregate.latex(table, pd.DataFrame(columns=["attack", "n_examples", "attack_seed"]), cfg["seeds"])
    assert tex.count("\\multirow{6}{*}") == 3 and tex.count("\\midrule") == 3  # header + between the 3 datasets
