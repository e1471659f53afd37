"""part.analysis.stats and the claim's three-way verdict: hand computations, and calibration on simulated grids
whose generator (benchmarks/calibration.py) does not share the estimator's model."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy import stats as scipy_stats
from scipy.special import expit

from part.analysis import aggregate, compare, curve_table, stats
from part.base import grid
from part.data.prepared import prepare_digits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import calibration  # noqa: E402


def flags(rng, n_seeds, n_examples, logit_shift=0.0, seed_sd=0.3, share=None):
    """(base, part) correct flags: per-example difficulty, a per-seed effect shared by both rows of a seed
    (same initialisation and data order), PART's own per-seed effect and a shift of ``logit_shift``."""
    difficulty = rng.normal(0.5, 1.5, n_examples)
    seed = rng.normal(0, seed_sd, (n_seeds, 1))
    own = rng.normal(0, seed_sd, (n_seeds, 1))
    u = rng.random((n_seeds, n_examples))
    shared = rng.random((n_seeds, n_examples)) < (0.7 if share is None else share)
    v = np.where(shared, u, rng.random((n_seeds, n_examples)))
    return u < expit(difficulty + seed), v < expit(difficulty + seed + own + logit_shift)


def claim(part_nat, base_nat, part_aa, base_aa):
    est = {"natural": stats.paired_difference(part_nat, base_nat), "aa": stats.paired_difference(part_aa, base_aa)}
    return compare.judge(est, 0.95, compare._our_advice(None))


def test_known_components_of_a_hand_made_table():
    # seed means 50, 75 (+ interaction), example means 0, 50, 100, 100
    x = np.array([[0, 0, 100, 100], [0, 100, 100, 100]], dtype=float)
    est = stats.crossed(x)
    assert est.mean == pytest.approx(62.5) and (est.n_seeds, est.n_examples, est.seed_df) == (2, 4, 1)
    residual = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
    assert est.residual_var == pytest.approx((residual ** 2).sum() / 3)
    assert est.seed_ratio == pytest.approx(4 * np.var([50, 75], ddof=1) / est.residual_var)
    assert est.seed_var == pytest.approx(np.var([50, 75], ddof=1) - est.residual_var / 4)  # unbiased, unclipped
    assert est.example_var == pytest.approx(np.var([0, 50, 100, 100], ddof=1) - est.residual_var / 2)
    seed_piece, example_piece = est.pieces()
    assert seed_piece[0] == pytest.approx((est.seed_var + est.residual_var / 4) / 2) and seed_piece[1] == 1
    # four examples: the floor (one example at the other extreme, 100²/N) binds
    assert example_piece[0] == pytest.approx(max(est.example_var, 100 ** 2 / 4) / 4) and example_piece[1] == 3


def test_bartlett_equals_scipys_on_samples():
    rng = np.random.default_rng(0)
    samples = [rng.normal(0, sd, n) for sd, n in ((1, 4), (1.5, 6), (0.7, 3), (1.1, 9))]
    pooled, p = stats.bartlett([s.var(ddof=1) for s in samples], [len(s) - 1 for s in samples])
    assert p == pytest.approx(scipy_stats.bartlett(*samples).pvalue, rel=1e-12)
    assert pooled == pytest.approx(sum((len(s) - 1) * s.var(ddof=1) for s in samples) / 18)


def test_homogeneous_rows_share_one_ratio_and_heterogeneous_ones_keep_their_own():
    rng = np.random.default_rng(1)
    rows = [stats.paired_difference(*reversed(flags(rng, 3, 2000, seed_sd=0.05))) for _ in range(6)]
    pooled = stats.pool(rows)
    dfs = sum(e.seed_df for e in rows)
    phi = sum(e.seed_df * e.seed_ratio for e in rows) / dfs
    alone = stats.above_the_rest([e.seed_ratio for e in rows], [e.seed_df for e in rows]) < stats.row_level(2)
    assert alone.sum() <= 1  # by chance one row in ten lies above the rest at this level
    borrowing = [p for p, a in zip(pooled, alone) if not a]
    assert all(p.pooled == 6 and p.seed_df == dfs == 12 for p in borrowing)
    assert all(p.seed_ratio == pytest.approx(phi) for p in borrowing)
    assert all(p.mean == e.mean and p.residual_var == e.residual_var for p, e in zip(pooled, rows))
    assert pooled[0].homogeneity_p > stats.HOMOGENEITY_LEVEL
    # one row whose seeds differ by 10 points: the test rejects, nobody borrows
    wild = np.zeros((3, 2000), dtype=bool)
    wild[1, :200] = wild[2, :400] = True
    mixed = stats.pool([*rows, stats.accuracy(wild), None])
    assert mixed[-1] is None and all(m.pooled == 1 and (m.seed_var, m.seed_df) == (e.seed_var, e.seed_df)
                                     for m, e in zip(mixed, rows))
    assert mixed[0].homogeneity_p < stats.HOMOGENEITY_LEVEL
    assert stats.pool(rows[:1]) == rows[:1]  # one row: nothing to borrow


def test_large_true_differences_hold_or_do_not():
    rng = np.random.default_rng(1)
    base_nat, part_nat = flags(rng, 5, 2000, logit_shift=0.8, seed_sd=0.1)  # ≈ +15 points natural
    base_aa, part_aa = flags(rng, 5, 2000, logit_shift=0.3, seed_sd=0.1)  # ≈ +6 points AA
    assert claim(part_nat, base_nat, part_aa, base_aa) == ("holds", "")
    base_aa, worse_aa = flags(rng, 5, 2000, logit_shift=-0.8, seed_sd=0.1)  # ≈ −15 points AA
    assert claim(part_nat, base_nat, worse_aa, base_aa) == ("does not hold", "Δ AA < −0.50")
    assert claim(base_nat, part_nat, part_aa, base_aa) == ("does not hold", "Δ natural ≤ +0.00")


def test_no_true_difference_at_small_n_is_rarely_decided():
    """Δ natural = 0 sits on the claim's threshold: each grid decides it at most 2.5 % + 2.5 % of the time."""
    rng = np.random.default_rng(2)
    verdicts = []
    for _ in range(60):
        base_nat, part_nat = flags(rng, 2, 60)
        base_aa, part_aa = flags(rng, 2, 20)
        verdicts.append(claim(part_nat, base_nat, part_aa, base_aa)[0])
    assert verdicts.count("holds") <= 2 and verdicts.count("inconclusive") >= 54


def test_agreeing_runs_still_leave_an_interval():
    """20/20 AA examples lost by both rows: the floors keep the interval from being a point, also on a test
    set evaluated whole, where only the seed piece is left."""
    none = np.zeros((2, 20), dtype=bool)
    low, high = stats.interval(stats.paired_difference(none, none))
    assert low < -5 and high > 5
    low, high = stats.interval(stats.accuracy(none))
    assert low == 0 < high
    every = np.ones((3, 10_000), dtype=bool)
    low, high = stats.interval(stats.on_test_set(stats.accuracy(every), 10_000))
    assert low < 100 == high  # never past what an accuracy can be


def test_one_seed_gives_no_interval_and_no_verdict():
    rng = np.random.default_rng(3)
    base, part = flags(rng, 1, 500, logit_shift=2.0)
    est = stats.paired_difference(part, base)
    assert np.isnan(stats.interval(est)).all() and not est.seeds_known
    assert claim(part, base, part, base)[0] == "inconclusive"
    assert stats.pool([est, est]) == [est, est]


def test_what_would_decide_it_has_the_stated_power_at_the_observed_spread():
    rng = np.random.default_rng(5)
    base, part = flags(rng, 2, 2000, logit_shift=0.1, seed_sd=0.1)
    est = stats.paired_difference(part, base)
    gap = est.mean - 0.0
    seeds = stats.to_decide(est, gap, "n_seeds")
    assert seeds is not None and seeds > 2

    def detectable(**design):
        pieces = est.pieces(**design)
        se, df = stats._se_df(pieces)
        return se * (scipy_stats.t.ppf(0.975, df) + scipy_stats.t.ppf(stats.POWER, df))

    assert detectable(n_seeds=seeds) <= abs(gap) < detectable(n_seeds=seeds - 1)
    assert stats.half_width(est, n_seeds=seeds) < abs(gap)
    examples = stats.to_decide(est, gap, "n_examples")
    assert examples is None or detectable(n_examples=examples) <= abs(gap)
    assert stats.to_decide(est, gap, "n_examples", limit=2000) is None  # never beyond the test set
    assert stats.to_decide(stats.paired_difference(part[:1], base[:1]), gap, "n_seeds") is None
    assert stats.min_detectable(est) == pytest.approx(float(detectable()))


def test_on_the_test_set_only_seeds_and_the_unevaluated_rest_count():
    rng = np.random.default_rng(6)
    base, _ = flags(rng, 3, 400)
    est = stats.accuracy(base)
    whole = stats.on_test_set(est, 400)

    def variance(e):
        return sum(v for v, _ in e.pieces())

    assert variance(whole) < variance(stats.on_test_set(est, 4000)) < variance(est)
    seed_means = 100 * base.mean(1)
    assert stats.half_width(whole) == pytest.approx(4.302653 * np.sqrt(seed_means.var(ddof=1) / 3), rel=1e-4)
    with pytest.raises(ValueError, match="cannot hold"):
        stats.on_test_set(est, 100)


def test_one_sided_p_agrees_with_the_interval_and_holm_with_a_hand_computation():
    rng = np.random.default_rng(7)
    for shift in (0.05, 0.1, 0.2):
        est = stats.paired_difference(*reversed(flags(rng, 3, 1000, logit_shift=shift, seed_sd=0.05)))
        low, _ = stats.interval(est)
        assert (stats.p_above(est, 0.0) < 0.025) == (low > 0)
        assert stats.p_above(est, low) == pytest.approx(0.025, abs=1e-9)
    adjusted = stats.holm([0.01, 0.04, np.nan, 0.03, 0.005])
    # sorted 0.005, 0.01, 0.03, 0.04 → 4·0.005, 3·0.01, 2·0.03, 1·0.04, running maximum
    assert np.allclose(adjusted, [0.03, 0.06, np.nan, 0.06, 0.02], equal_nan=True)


def test_the_papers_stds_pool_where_homogeneous():
    cifar_natural = [0.14, 0.26, 0.15, 0.15, 0.31, 0.16, 0.28, 0.10, 0.15]
    stds, df = stats.pool_stds(cifar_natural, 3)
    assert df == 18 and np.allclose(stds, np.sqrt(np.mean(np.square(cifar_natural))))
    svhn_aa = [0.05, 0.13, 0.08, 0.47, 0.67, 0.24, 0.23, 0.10, 0.13]  # Bartlett p ≈ 0.02
    stds, df = stats.pool_stds(svhn_aa, 3)
    assert df == 2 and np.allclose(stds, svhn_aa)


def test_a_reproduction_of_the_same_distribution_is_not_said_to_differ():
    """Ours and 'the paper' are runs of one world on one test set (3 seeds each, 9 rows a column); the paper
    publishes each row's mean ± std. Pooled as the tables pool them, a cell is rarely said to differ."""
    rng = np.random.default_rng(8)
    settings = compare.Settings()
    verdicts = []
    for _ in range(12):
        world = calibration.World(rng, "natural", calibration.SPREADS["typical"], 0.0)
        flags_, _ = world.draw(6, 10_000)
        ours = stats.pool([stats.accuracy(f[:3]) for f in flags_.values()])
        theirs = [100 * f[3:].mean(1) for f in flags_.values()]
        stds, df = stats.pool_stds([t.std(ddof=1) for t in theirs], 3)
        for est, t, sd in zip(ours, theirs, stds):
            versus = stats.Versus(stats.on_test_set(est, 10_000), t.mean(), sd, 3, df)
            verdicts.append(compare.reproduction(versus, settings, 10_000, "Natural")[0])
    assert verdicts.count("differs") <= 0.03 * len(verdicts)
    # ≈ 1 in 20 rows lies above the rest of its column by chance and keeps its own ratio (at 7 degrees of freedom)
    assert verdicts.count("reproduced") >= 0.85 * len(verdicts)


@pytest.mark.parametrize("seeds, examples, spread, effect", [
    (2, 2000, "typical", (0.0, 0.0)), (3, 2000, "wide", (0.0, 0.0)), (5, 200, "typical", (0.0, 0.0)),
    (3, 10_000, "typical", (4.0, 1.0))])
def test_intervals_cover_about_95_percent_of_simulated_grids(seeds, examples, spread, effect):
    """A seeded subset of benchmarks/calibration.py (whose 1 000 grids a setting hold coverage to [0.93, 0.97]):
    coverage of a cell and of a PART − base difference within [0.92, 0.98], the Monte Carlo error of 120 grids
    allowed for; the claim, when false, said to hold in ≤ 2.5 % (+ noise) of rows, and decided in ≥ 90 % of
    grids where it is true with margin (+4 natural / +1 AA) at the paper's scale."""
    result = calibration.run_setting(calibration.Setting(seeds, examples, spread, *effect), grids=120)
    assert 0.92 <= result["coverage_cell"] <= 0.98, result
    assert 0.92 <= result["coverage_diff"] <= 0.98, result
    if effect == (0.0, 0.0):
        assert result["verdict_holds"] <= 0.035, result
    else:
        assert result["verdict_holds"] >= 0.9, result


# The verdict at its boundaries: each interval end exactly on, just inside and just outside each threshold

STD, RUNS = 1.0, 5
SE, DF = STD * np.sqrt(2 / RUNS), 2 * (RUNS - 1)  # two equal stds over 5 runs: Welch–Satterthwaite gives 8
HALF = scipy_stats.t.ppf(0.975, DF) * SE
NUDGE = 1e-6  # far above the 1e-9 the criteria allow for rounding, far below any difference a table prints


def placed(end: str, at: float) -> stats.Welch:
    """A Welch estimate whose 95 % interval's ``end`` ("low" or "high") lies at ``at``."""
    return stats.Welch(mean=at + HALF if end == "low" else at - HALF, std=STD, base_std=STD, n_runs=RUNS)


CLEARLY_PASSING = stats.Welch(mean=10.0, std=STD, base_std=STD, n_runs=RUNS)

# (end placed, offset from the threshold, status): natural needs Δ > 0 — its threshold excluded — and
# AA needs Δ ≥ −tolerance, its threshold included
NATURAL_CASES = [("low", 0.0, "open"), ("low", NUDGE, "pass"), ("low", -NUDGE, "open"),
                 ("high", 0.0, "fail"), ("high", -NUDGE, "fail"), ("high", NUDGE, "open")]
AA_CASES = [("low", 0.0, "pass"), ("low", NUDGE, "pass"), ("low", -NUDGE, "open"),
            ("high", 0.0, "open"), ("high", -NUDGE, "fail"), ("high", NUDGE, "open")]
VERDICT = {"pass": "holds", "fail": "does not hold", "open": "inconclusive"}


def test_the_placed_intervals_are_where_they_are_said_to_be():
    low, high = stats.interval(placed("low", 0.3))
    assert low == pytest.approx(0.3, abs=1e-12) and high == pytest.approx(0.3 + 2 * HALF, abs=1e-12)
    low, high = stats.interval(placed("high", -0.5))
    assert high == pytest.approx(-0.5, abs=1e-12) and low == pytest.approx(-0.5 - 2 * HALF, abs=1e-12)


@pytest.mark.parametrize("tolerance", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("attack, cases", [("natural", NATURAL_CASES), ("aa", AA_CASES)])
def test_each_interval_end_on_inside_and_outside_each_threshold(attack, cases, tolerance):
    claim = compare.Claim(aa_tolerance=tolerance)
    threshold = 0.0 if attack == "natural" else -tolerance
    criterion = next(c for c in claim.criteria if c.attack == attack)
    assert criterion.threshold == threshold
    for end, offset, status in cases:
        est = placed(end, threshold + offset)
        case = f"{attack} {end} end at {threshold:+g} {offset:+g}"
        assert criterion.status(*stats.interval(est)) == status, case
        estimates = {"natural": CLEARLY_PASSING, "aa": CLEARLY_PASSING, attack: est}
        verdict, detail = compare.judge(estimates, 0.95, lambda *_: "more runs", claim)
        assert verdict == VERDICT[status], case
        if status == "fail":
            printed = "+0.00" if threshold == 0 else f"−{-threshold:.2f}"
            assert detail == f"Δ {'natural ≤' if attack == 'natural' else 'AA <'} {printed}", case


@pytest.mark.parametrize("tolerance", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("attack", ["natural", "aa"])
def test_the_claims_p_value_is_its_weaker_criterions_one_sided_t_test(attack, tolerance):
    """p of "Δ ≤ threshold" from scipy's t: exactly 0.025 with the low end on the threshold, below it
    just inside, above it just outside — *holds* ⇔ p ≤ 0.025 at every boundary."""
    claim = compare.Claim(aa_tolerance=tolerance)
    threshold = 0.0 if attack == "natural" else -tolerance
    for offset in (0.0, NUDGE, -NUDGE):
        est = placed("low", threshold + offset)
        expected = scipy_stats.t.sf((est.mean - threshold) / SE, DF)
        p = compare.holds_p({"natural": CLEARLY_PASSING, "aa": CLEARLY_PASSING, attack: est}, claim)
        assert p == pytest.approx(expected, rel=1e-9, abs=0)
        if offset == 0.0:
            assert p == pytest.approx(0.025, abs=1e-12)
        else:
            assert (p < 0.025) == (offset > 0)


def ratio_row(ratio: float, seeds: int = 3) -> stats.Crossed:
    """A PART − base row of ``seeds`` seeds and 10 000 examples whose seed means vary ``ratio`` times what flips
    give."""
    return stats.Crossed(0.0, seeds, 10_000, ratio, 50.0, 400.0, seeds - 1.0)


def test_a_row_above_the_rest_of_its_column_keeps_its_own_spread():
    """Five alike rows and one with a seed ratio 8× theirs: Bartlett's test, on 2 degrees of freedom a row, lets
    the column pool; the row's own test against the rest does not let it borrow a ratio it would under-cover."""
    ratios = np.array([1.0, 1.3, 0.8, 1.1, 0.9, 8.0])
    rows = [ratio_row(r) for r in ratios]
    assert stats.bartlett(ratios, np.full(6, 2.0))[1] > stats.HOMOGENEITY_LEVEL
    rest = ratios[:5].mean()
    p = stats.above_the_rest(ratios, np.full(6, 2.0))
    assert p[5] == pytest.approx(scipy_stats.f.sf(8.0 / rest, 2, 10)) and p[5] < stats.row_level(2)
    assert (p[:5] > stats.row_level(2)).all()
    pooled = stats.pool(rows)
    # its own ratio, at degrees of freedom halfway from its own 2 to the column's 12; nothing borrowed
    assert pooled[5] == replace(rows[5], homogeneity_p=pooled[5].homogeneity_p, seed_df=7.0)
    # the others share the ratio of all six (the divergent one included: never narrower for its leaving), 12 df
    assert all(e.seed_ratio == pytest.approx(ratios.mean()) and e.seed_df == 12 for e in pooled[:5])
    assert stats.half_width(pooled[5]) > 1.8 * stats.half_width(pooled[0])  # ≈ √(8 / 2.18) · t₇ / t₁₂
    # between the interval on its own 2 df and the one on the column's 12, at its own ratio
    assert (stats.half_width(replace(rows[5], seed_df=12.0)) < stats.half_width(pooled[5])
            < stats.half_width(rows[5]))


def test_a_homogeneous_column_pools_every_row():
    """Six rows whose ratios differ no more than their degrees of freedom make them (each row's F test against the
    rest: p ≥ 0.20 at three seeds, ≥ 0.30 at five): none is set apart, all share the df-weighted mean ratio with
    Σ (K − 1) degrees of freedom."""
    for seeds, ratios in ((3, [1.0, 1.4, 0.7, 1.1, 0.9, 1.9]), (5, [1.0, 1.3, 0.8, 1.1, 0.9, 1.2])):
        pooled = stats.pool([ratio_row(r, seeds) for r in ratios])
        assert all(e.pooled == 6 and e.seed_df == 6 * (seeds - 1) and e.seed_ratio == pytest.approx(np.mean(ratios))
                   for e in pooled)


def test_the_row_level_is_lenient_only_where_a_row_has_the_degrees_of_freedom_to_use_it():
    """A row 3.2× the rest: at three seeds (2 df, level 5 %) the F test cannot tell it from chance and it pools;
    at five (4 df, level 10 %) it is set apart, with 4 + (24 − 4)/2 = 14 degrees of freedom."""
    ratios = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 3.2])
    assert stats.row_level(1) == stats.row_level(3) == 0.05 and stats.row_level(4) == stats.row_level(9) == 0.1
    three = stats.pool([ratio_row(r, 3) for r in ratios])
    assert three[5].pooled == 6 and three[5].seed_df == 12
    assert scipy_stats.f.sf(3.2 / 1.0, 2, 10) > 0.05  # the level three seeds get
    five = stats.pool([ratio_row(r, 5) for r in ratios])
    assert scipy_stats.f.sf(3.2 / 1.0, 4, 20) < 0.1  # the level five seeds get
    assert five[5].pooled == 1 and five[5].seed_ratio == 3.2 and five[5].seed_df == 14
    assert all(e.pooled == 6 and e.seed_df == 24 for e in five[:5])


def test_accuracy_intervals_stay_inside_0_to_100_and_differences_inside_plus_minus_100():
    every = np.ones((3, 200), dtype=bool)
    low, high = stats.interval(stats.accuracy(every))  # was [98.96, 101.04]
    assert 98 < low < 100 and high == 100
    none = np.zeros((3, 200), dtype=bool)
    assert stats.interval(stats.accuracy(none))[0] == 0
    diff = stats.paired_difference(every[:, :4], none[:, :4])  # +100 on four examples: the floor makes it wide
    assert stats.interval(diff)[1] == 100 and stats.bounded(diff, -150.0, 150.0) == (-100, 100)
    # the robustness curve's one-seed interval (the test sample's alone): 98 % on 100 examples
    one_seed = stats.accuracy(np.arange(100)[None, :] >= 2)
    low, high = curve_table._interval(one_seed, 0.95)
    assert high == 100 and low == pytest.approx(98 - float(stats.half_width(one_seed)))


def test_the_advice_never_exceeds_the_real_test_set():
    """An explicit evaluation.n_examples of 10 000 on CIFAR-10 is the whole test set: no more examples to
    advise (formerly ≈ 19 812); a 2 000-example column is advised at most the 10 000 there are."""
    sizes = aggregate.test_set_sizes(["cifar10", "digits"])
    assert sizes == {"cifar10": 10_000, "digits": len(prepare_digits().test)}
    rng = np.random.default_rng(11)
    base, part = flags(rng, 3, 10_000, logit_shift=0.02, seed_sd=0.02)
    est = stats.paired_difference(part, base)
    assert stats.to_decide(est, 0.3, "n_examples", limit=sizes["cifar10"]) is None
    advice = compare._more_data(est, 0.3, "AA", 0.95, sizes["cifar10"])
    assert "AA examples" not in advice
    subset = stats.paired_difference(part[:, :2000], base[:, :2000])
    examples = stats.to_decide(subset, 0.3, "n_examples", limit=sizes["cifar10"])
    assert examples is None or 2000 < examples <= 10_000


def test_every_example_count_the_schema_accepts_tabulates_or_is_refused(tmp_path):
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    cfg["evaluation"] = {**cfg["evaluation"], "aa_n_examples": 1}
    with pytest.raises(grid.ConfigError, match=r"key 'evaluation.aa_n_examples': 1 is less than the minimum of 2 "
                                               r"\(.*an interval over test examples needs two\)"):
        grid.load(cfg)
    two = stats.accuracy(np.array([[True, False], [True, True]]))  # the smallest accepted: an interval
    assert np.isfinite(stats.interval(two)).all()


def test_a_printed_std_of_zero_is_floored_not_a_zero_width_interval():
    paper = compare.paper_cells(compare.load_reference("paper_table1"))
    paper.loc[paper.index[0], "paper_std"] = 0.0
    pooled = compare._pooled_paper(paper, 3)
    assert pooled["paper_pooled_std"].min() >= compare.PRINTED_STD_FLOOR
    ours = stats.on_test_set(stats.accuracy(np.ones((3, 10_000), dtype=bool)), 10_000)
    versus = stats.Versus(ours, 99.0, compare.PRINTED_STD_FLOOR, 3, 2.0)
    assert np.isfinite(compare.differs_p(versus, 1.0)) and np.diff(stats.interval(versus))[0] > 0
    reference = compare.load_reference("paper_table1")
    reference.loc[0, "aa_std"] = -0.1
    with pytest.raises(ValueError, match="paper_table1.csv: cifar10/AT has std -0.1 for aa; a std is a number ≥ 0"):
        compare.paper_cells(reference)


@pytest.mark.parametrize("world, seeds", [("outlier-row", 5), ("spread-ratio", 3), ("near-100", 3)])
def test_every_row_of_the_divergent_worlds_is_covered(world, seeds):
    """A seeded subset of the calibration's divergent worlds, per row (not the average over rows): a PART row 4×
    its siblings' spread, PART cells 3× the base's, accuracies near 100 % (intervals cut at 100)."""
    examples = 200 if world == "near-100" else 2000
    result = calibration.run_setting(calibration.Setting(seeds, examples, world, 0.0, 0.0), grids=120)
    assert result["coverage_diff_row_min"] >= 0.88 and result["coverage_cell_row_min"] >= 0.88, result
    assert result["holds_row_max"] <= 0.05, result
    assert result["cells_beyond_range"] == 0, result
