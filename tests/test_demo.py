"""The finished demo's outputs (`make demo` first; `make check-demo` runs these, `make test` leaves them out):
every table, figure, experiment, check and checkpoint table at demo size, nothing left to do, the HTML report.
The demo made by other sources than the checkout's is refused with one message (part.workflow.fingerprint)."""

import json

import pandas as pd
import pytest
import yaml

from part.workflow.fingerprint import stale_reason
from test_workflow import ROOT, snakemake

pytestmark = pytest.mark.demo

RESULTS = ROOT / yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())["results_dir"]
ARGS = ["--cores", "2", "--configfile", "configs/demo.yaml"]


def test_the_finished_demo_has_every_output_and_nothing_left_to_do(tmp_path):
    if reason := stale_reason(RESULTS, ROOT):
        pytest.fail(reason, pytrace=False)
    tables = RESULTS / "tables"
    table = pd.read_csv(tables / "main.csv")
    stats = ["mean", "std", "n_seeds", "missing_seeds", "ci_low", "ci_high", "n_examples", "diff", "diff_low",
             "diff_high", "best"]
    assert len(table) == 9 and list(table.columns) == [
        "dataset", "arch", "variant", "method", "family", "base_variant",
        *[f"{a}_{s}" for a in ("natural", "pgd20", "mma", "aa", "aa_release", "worst_case") for s in stats]]
    assert (table["natural_n_seeds"] == 2).all() and table["natural_missing_seeds"].isna().all()
    assert "\\toprule" in (tables / "main.tex").read_text()
    versus = (tables / "paper_vs_reproduction.md").read_text()
    assert "No cell of the paper matches this grid" in versus
    assert "This grid evaluates `aa_release` (the release's torchattacks AutoAttack" in versus
    assert "`aa` (fra31's standard AutoAttack" in versus and "our standard AA is shown beside it" in versus
    verdicts = pd.read_csv(tables / "claim_verdicts.csv")
    assert len(verdicts) == 6  # 2 PART variants in each of 3 families
    # 2 seeds (one degree of freedom for the seed spread) and AA on 10 images: no confident verdict from noise
    assert set(verdicts["verdict"]) <= {"holds", "does not hold", "inconclusive"}
    assert (verdicts["aa_n_examples"] == 10).all() and (verdicts["n_seeds"] == 2).all()
    assert (verdicts["aa_tolerance"] == 0.5).all()
    assert "Sensitivity to the AA tolerance (here 0.5): at 0 points: ours " in (tables / "claim_verdicts.md").read_text()
    assert "Evaluation budget: 2 seeds per cell (0, 1)" in (tables / "claim_verdicts.md").read_text()
    summary = pd.read_csv(tables / "summary.csv")
    assert (summary["n_seeds"] == 2).all() and summary["missing_seeds"].isna().all()
    metrics = json.loads((RESULTS / "digits/small_cnn/part_s1/seed1/metrics.json").read_text())
    assert metrics["attacks"]["aa"]["n_examples"] == metrics["attacks"]["aa_release"]["n_examples"] == 10
    assert metrics["attacks"]["natural"]["n_examples"] == 360
    assert metrics["attacks"]["aa_release"]["settings"]["apgd-ce"]["n_iter"] == 10
    figures = sorted(p.name for p in (RESULTS / "figures").glob("*.png"))
    assert figures == ["claim.png", "eps_share.png", "gallery_digits.png", "robustness_curve_digits.png", "tradeoff.png",
                       "training_curves_digits.png", "validation_digits.png"]
    # the robustness curve of AT and PART (s = 1), the sanity checks of PART (s = 1) in each family: seed 0, demo size
    sanity = pd.read_csv(tables / "sanity.csv")
    assert set(sanity["variant"]) == {"part_s1", "part_trades_s1", "part_mart_s1"} and set(sanity["seed"]) == {0}
    curve = pd.read_csv(tables / "robustness_curve.csv")
    assert set(curve["variant"]) == {"at", "part_s1"} and curve.groupby("variant").size().nunique() == 1
    # validation on, best.pt and ema.pt kept, each evaluated and set beside the final weights
    info = json.loads((RESULTS / "digits/small_cnn/part_s1/seed1/run.json").read_text())
    assert info["checkpoints"] == ["last", "best", "ema"] and info["validation"]["train_images"] == 1437 - 180
    assert 1 <= info["best"]["epoch"] <= info["config"]["epochs"]
    compared = pd.read_csv(tables / "checkpoints.csv", dtype={"verdict": str, "to_decide": str})
    assert len(compared) == 9 * 3 * 2 and set(compared["checkpoint"]) == {"last", "best", "ema"}
    assert set(compared.loc[compared["checkpoint"] != "last", "verdict"]) <= {"higher", "lower", "inconclusive",
                                                                               "same weights"}
    assert "Δ PGD-20 best − last" in (tables / "checkpoints.md").read_text()
    for name in ["quadrant", "cam_methods", "eps_low_sweep", "s_sweep", "release_switches", "ae_generator"]:
        exp = pd.read_csv(RESULTS / "experiments" / name / f"{name}.csv")
        assert len(exp) >= 2 and (RESULTS / "experiments" / name / f"{name}.png").stat().st_size > 10_000, name
    readme = (RESULTS / "README.md").read_text()
    assert "## Main table" in readme and "| train " in readme and "tables/main.md" in readme
    assert "Nothing to be done" in snakemake(*ARGS, "-n")
    snakemake(*ARGS, "--report", str(tmp_path / "report.html"))
    html = (tmp_path / "report.html").read_text()
    assert all(category in html for category in ("Main table", "Figures", "Experiments", "Summary"))
