"""part.stats and the claim's three-way verdict on synthetic per-example flags with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from part import compare, stats


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
    est = stats.crossed(x, span=100.0)
    assert est.mean == pytest.approx(62.5) and (est.n_seeds, est.n_examples) == (2, 4)
    residual = x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + x.mean()
    assert est.residual_var == pytest.approx((residual ** 2).sum() / 3)
    assert est.seed_var == pytest.approx(max(np.var([50, 75], ddof=1) - est.residual_var / 4, 0))
    assert est.example_var == pytest.approx(np.var([0, 50, 100, 100], ddof=1) - est.residual_var / 2)


def test_large_true_differences_hold_or_do_not():
    rng = np.random.default_rng(1)
    base_nat, part_nat = flags(rng, 5, 2000, logit_shift=0.8, seed_sd=0.1)  # ≈ +15 points natural
    base_aa, part_aa = flags(rng, 5, 2000, logit_shift=0.3, seed_sd=0.1)  # ≈ +6 points AA
    assert claim(part_nat, base_nat, part_aa, base_aa) == ("holds", "")
    base_aa, worse_aa = flags(rng, 5, 2000, logit_shift=-0.8, seed_sd=0.1)  # ≈ −15 points AA
    assert claim(part_nat, base_nat, worse_aa, base_aa) == ("does not hold", "Δ AA < −0.50")
    assert claim(base_nat, part_nat, part_aa, base_aa) == ("does not hold", "Δ natural ≤ +0.00")


def test_no_true_difference_at_small_n_is_inconclusive():
    rng = np.random.default_rng(2)
    for _ in range(20):
        base_nat, part_nat = flags(rng, 2, 60)
        base_aa, part_aa = flags(rng, 2, 20)
        verdict, detail = claim(part_nat, base_nat, part_aa, base_aa)
        assert verdict == "inconclusive", detail
        assert "Δ natural" in detail


def test_agreeing_runs_still_leave_an_interval():
    """20/20 AA examples lost by both rows: the floor keeps the interval from being a point."""
    none = np.zeros((2, 20), dtype=bool)
    low, high = stats.interval(stats.paired_difference(none, none))
    assert low < -5 and high > 5
    low, high = stats.interval(stats.accuracy(none))
    assert low < 0 < high


def test_one_seed_gives_no_interval_and_no_verdict():
    rng = np.random.default_rng(3)
    base, part = flags(rng, 1, 500, logit_shift=2.0)
    est = stats.paired_difference(part, base)
    assert np.isnan(stats.interval(est)).all() and not est.seeds_known
    assert claim(part, base, part, base)[0] == "inconclusive"


@pytest.mark.parametrize("n_seeds, n_examples", [(5, 500), (3, 1000)])
def test_interval_covers_the_true_difference_about_95_percent_of_grids(n_seeds, n_examples):
    """Simulated grids drawn afresh (seeds and test examples) from one model; the truth by Monte Carlo."""
    rng = np.random.default_rng(4)
    shift, seed_sd = 0.2, 0.3
    d, a, o = rng.normal(0.5, 1.5, 2_000_000), rng.normal(0, seed_sd, 2_000_000), rng.normal(0, seed_sd, 2_000_000)
    truth = 100 * (expit(d + a + o + shift).mean() - expit(d + a).mean())
    truth_base = 100 * expit(d + a).mean()
    grids, covered, covered_base = 500, 0, 0
    for _ in range(grids):
        base, part = flags(rng, n_seeds, n_examples, logit_shift=shift, seed_sd=seed_sd)
        low, high = stats.interval(stats.paired_difference(part, base))
        covered += low <= truth <= high
        low, high = stats.interval(stats.accuracy(base))
        covered_base += low <= truth_base <= high
    assert 0.91 <= covered / grids <= 0.99
    assert 0.90 <= covered_base / grids <= 0.99


def test_what_would_decide_it_shrinks_the_interval_below_the_gap():
    rng = np.random.default_rng(5)
    base, part = flags(rng, 2, 2000, logit_shift=0.1, seed_sd=0.1)
    est = stats.paired_difference(part, base)
    gap = est.mean - 0.0
    seeds = stats.to_decide(est, gap, "n_seeds")
    assert seeds is not None and seeds > 2
    assert stats.half_width(est, n_seeds=seeds) < abs(gap) <= stats.half_width(est, n_seeds=seeds - 1)
    examples = stats.to_decide(est, gap, "n_examples")
    assert examples is None or stats.half_width(est, n_examples=examples) < abs(gap)
    assert stats.to_decide(stats.paired_difference(part[:1], base[:1]), gap, "n_seeds") is None


def test_on_the_test_set_only_seeds_and_the_unevaluated_rest_count():
    rng = np.random.default_rng(6)
    base, _ = flags(rng, 3, 400)
    est = stats.accuracy(base)
    whole = stats.on_test_set(est, 400)
    def variance(e):
        return sum(v for v, _ in e.pieces())

    assert variance(whole) < variance(stats.on_test_set(est, 4000)) < variance(est)
    seed_means = 100 * base.mean(1)
    assert stats.half_width(whole) == pytest.approx(
        4.302653 * np.sqrt(max(seed_means.var(ddof=1), est.residual_var / 400) / 3), rel=1e-4)
    with pytest.raises(ValueError, match="cannot hold"):
        stats.on_test_set(est, 100)
