"""Confidence intervals for accuracies that vary with the seed and with the test sample, and for
PART − base differences, calibrated by borrowing the seed-level variance across a table's rows.

An accuracy here is the mean of a seeds × test-examples table of outcomes (100 = correct, 0 = not;
for a paired difference of two runs +100 / 0 / −100). Two sources of noise are crossed: every seed
sees the same test examples. The model is the two-way random-effects one,
x[k, i] = μ + a_k + b_i + e_ki (seed, example, interaction), and the variance of the grand mean over
K seeds and N examples is

    Var = (σ_a² + σ_e²/N)/K + σ_b²/N.

The interaction σ_e² — examples flipping between runs — is estimated with (K − 1)(N − 1) degrees of
freedom; the seed-level excess σ_a² only with K − 1. With three seeds a t quantile on 2 degrees of
freedom (4.30) made intervals twice as wide as 95 % needs. But the *ratio* φ = (N σ_a² + σ_e²)/σ_e²
(the seed means' spread relative to what flips alone give) is much the same for the rows of one table
column — the paper's own stds pass a homogeneity test in 10 of its 12 (dataset, attack) columns — so
:func:`pool` estimates it once per column from every row (Σ (K − 1) degrees of freedom), after a
Bartlett test of homogeneity; a column that fails keeps each row's own estimate, and a row whose ratio lies
above the rest of its column's (:func:`above_the_rest`) keeps its own ratio, at more degrees of freedom than
its own. Details, references and the simulation that shows the coverage: docs/statistics.md.

Everything is closed-form and numpy-vectorised; no resampling, so the result is the same on every
machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as st

CONFIDENCE = 0.95
"""Default two-sided confidence level of every interval (the workflow's ``statistics.confidence``)."""
POWER = 0.8
"""Power at which "what would decide it" and the detectable difference are quoted (the usual 80 %)."""
HOMOGENEITY_LEVEL = 0.05
"""Bartlett's test below this p-value: the rows' seed spreads differ, and each keeps its own."""
ROW_LEVELS = ((4, 0.1), (0, 0.05))
"""(least degrees of freedom of a row's own ratio, level): a row whose seed ratio exceeds the rest of its column's
at a one-sided p-value below the level for its df is set apart (:func:`pool`). The more degrees of freedom, the
better the F test tells a divergent row from chance; each level is the most lenient that loses ≤ 3 points of power
in the calibration's homogeneous columns (with two degrees of freedom, three seeds, a level that would give a
4×-spread row 0.92 coverage costs about 20; docs/statistics.md, *Per row*)."""
SET_APART_SHARE = 0.5
"""A row set apart keeps its own ratio, with degrees of freedom d + SET_APART_SHARE·(D − d) between its own d and
the column's D. Its own d alone would make a homogeneous row flagged by chance — its ratio already selected for being
large — wide twice over (4.5 points of power lost at three seeds); the column's D would under-cover a truly divergent
row more (docs/statistics.md, *Per row*)."""
MAX_SEEDS = 1000
MAX_EXAMPLES = 10_000_000
"""Largest design the "what would decide it" search considers; beyond it, more data of that kind cannot."""
UNIT = 100.0
"""One example changing its outcome in one run moves a table entry by this much: the floors' unit."""


@dataclass(frozen=True)
class Crossed:
    """Mean and variance components of a seeds × examples table (see the module docstring).

    ``seed_ratio`` is φ, the seed means' variance over what flips alone give, N·s²(seed means)/σ_e² (nan with one
    seed), from this table or shared by the ``pooled`` rows of its column (:func:`pool`); ``seed_df`` its degrees of
    freedom: K − 1 alone, Σ (K − 1) pooled, with ``homogeneity_p`` the rows' Bartlett test. ``example_var`` is σ_b²
    and ``residual_var`` σ_e² (never below one example changing, so agreeing runs still leave an interval).
    ``population`` is None for the accuracy on the data distribution; a test-set size makes it the accuracy on
    that test set (:func:`on_test_set`). ``bounds`` is the range the mean lives in: [0, 100] for an accuracy,
    [−100, 100] for a difference; intervals are cut to it (:func:`bounded`).
    """
    mean: float
    n_seeds: int
    n_examples: int
    seed_ratio: float
    example_var: float
    residual_var: float
    seed_df: float
    pooled: int = 1
    homogeneity_p: float = math.nan
    population: int | None = None
    bounds: tuple[float, float] = (-UNIT, UNIT)

    @property
    def seeds_known(self) -> bool:
        """Whether the seed-to-seed variation could be estimated (two seeds or more)."""
        return self.n_seeds > 1

    @property
    def seed_var(self) -> float:
        """σ_a², the seed-level variance beyond flips: (φ − 1)·σ_e²/N. Unbiased, so it may be negative: clipping
        it at 0 would make every interval wider than 95 % needs (φ is near 1 in most real grids)."""
        return (self.seed_ratio - 1) * self.residual_var / self.n_examples

    def pieces(self, n_seeds: np.ndarray | int | None = None,
               n_examples: np.ndarray | int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(variance, degrees of freedom) of each piece of Var(mean), at this design or a larger one.

        A larger design keeps the estimated components (the "observed spread"); every pooled row is assumed
        to grow alike, so more seeds add ``pooled`` degrees of freedom each. With one seed only the example
        piece is known.
        """
        k = np.asarray(self.n_seeds if n_seeds is None else n_seeds, dtype=float)
        n = np.asarray(self.n_examples if n_examples is None else n_examples, dtype=float)
        sampled = np.maximum(1 - n / self.population, 0.0) if self.population else 1.0  # finite-population correction
        example = (np.maximum(self.example_var, UNIT ** 2 / n) / n * sampled, n - 1)
        if not self.seeds_known:
            return [example]
        # at the observed design the piece is φ·σ_e²/(NK) > 0; a projection keeps only a non-negative σ_a²
        seed_var = np.where(n == self.n_examples, self.seed_var, max(self.seed_var, 0.0))
        seed = ((seed_var + self.residual_var / n) / k, self.seed_df + self.pooled * (k - self.n_seeds))
        return [seed, example]


def on_test_set(est: Crossed, size: int) -> Crossed:
    """The estimate as one of the accuracy on a fixed test set of ``size`` examples, of which the table
    holds the first ``n_examples``: what a reproduction shares with a paper evaluated on the same test
    set, whose luck is then common to both. Only the seed piece and the subset's share of the example
    piece remain (none of it when the whole test set was evaluated)."""
    if size < est.n_examples:
        raise ValueError(f"a test set of {size} examples cannot hold the {est.n_examples} evaluated")
    return replace(est, population=size)


def crossed(x: np.ndarray) -> Crossed:
    """The variance components of a (K seeds, N examples) table of outcomes, from this table alone."""
    x = np.asarray(x, dtype=float)
    k, n = x.shape
    if n < 2:
        raise ValueError(f"an interval needs at least 2 test examples, got {n}")
    seed_means, example_means, grand = x.mean(1), x.mean(0), x.mean()
    if k == 1:
        return Crossed(grand, 1, n, math.nan, example_means.var(ddof=1), 0.0, 0.0)
    residual = x - seed_means[:, None] - example_means[None, :] + grand
    residual_var = max(float((residual ** 2).sum() / ((k - 1) * (n - 1))), UNIT ** 2 / (k * n))
    example_var = max(float(example_means.var(ddof=1)) - residual_var / k, 0.0)
    # seed means equal to the last digit (small tables) count as one example's difference between the seeds
    ratio = max(float(seed_means.var(ddof=1)), UNIT ** 2 / (k * n * n)) * n / residual_var
    return Crossed(grand, k, n, ratio, example_var, residual_var, k - 1)


def accuracy(correct: np.ndarray) -> Crossed:
    """Components of an accuracy (%) from bool correct flags (K seeds, N examples)."""
    return replace(crossed(100.0 * np.asarray(correct, dtype=float)), bounds=(0.0, UNIT))


def paired_difference(correct: np.ndarray, base: np.ndarray) -> Crossed:
    """Components of accuracy(correct) − accuracy(base) (points) from flags paired by seed and example.

    Row k of both tables must be runs of the same seed (shared initialisation and data order) and
    column i the same test example; pairing removes what the two runs share from the noise.
    """
    return crossed(100.0 * (np.asarray(correct, dtype=float) - np.asarray(base, dtype=float)))


def bartlett(variances: np.ndarray, dfs: np.ndarray) -> tuple[float, float]:
    """(pooled variance, p-value of Bartlett's test that all are estimates of it) from variance estimates
    with the given degrees of freedom (Bartlett 1937; Snedecor & Cochran, *Statistical Methods*, §13.10)."""
    variances, dfs = np.asarray(variances, dtype=float), np.asarray(dfs, dtype=float)
    total = dfs.sum()
    pooled = float((dfs * variances).sum() / total)
    if len(variances) < 2:
        return pooled, math.nan
    statistic = total * math.log(pooled) - float((dfs * np.log(variances)).sum())
    correction = 1 + ((1 / dfs).sum() - 1 / total) / (3 * (len(variances) - 1))
    return pooled, float(st.chi2.sf(statistic / correction, len(variances) - 1))


def above_the_rest(ratios: np.ndarray, dfs: np.ndarray) -> np.ndarray:
    """Per row, the one-sided p-value of an F test that its ratio exceeds the pooled ratio of the other rows,
    (d_i, Σ_{j≠i} d_j) degrees of freedom.

    Bartlett's test looks at all rows at once: one divergent row among six, with two degrees of freedom each,
    passes it three times in four, and would then borrow a spread many times smaller than its own.
    """
    ratios, dfs = np.asarray(ratios, dtype=float), np.asarray(dfs, dtype=float)
    rest_df = dfs.sum() - dfs
    rest = ((dfs * ratios).sum() - dfs * ratios) / rest_df
    return st.f.sf(ratios / rest, dfs, rest_df)


def row_level(df: float) -> float:
    """The level at which a row whose ratio has ``df`` degrees of freedom is tested against the rest
    (:data:`ROW_LEVELS`)."""
    return next(level for least, level in ROW_LEVELS if df >= least)


def pool(estimates: Sequence[Crossed | None], level: float = HOMOGENEITY_LEVEL) -> list[Crossed | None]:
    """The estimates of one table column (same dataset and attack, same kind: accuracies, or PART − base
    differences) with one seed ratio φ estimated from all of them, if Bartlett's test finds their ratios
    homogeneous at ``level``; else (or with fewer than two rows of ≥ 2 seeds) unchanged. A row whose own
    ratio lies above the rest's (:func:`above_the_rest` below :func:`row_level`) is set apart even then: it is the
    row the shared φ would under-cover; it keeps its own ratio, at :data:`SET_APART_SHARE` of the way from its own
    degrees of freedom to the column's.

    Each row's ratio r = N·s²(seed means)/σ_e² is ≈ φ·χ²_{K−1}/(K − 1): the df-weighted mean of all rows (the
    divergent one included, so that the others are never made narrower by its leaving) estimates the common
    φ with Σ (K − 1) degrees of freedom.
    """
    rows = [i for i, e in enumerate(estimates) if e is not None and e.seeds_known]
    if len(rows) < 2:
        return list(estimates)
    used = [estimates[i] for i in rows]
    dfs = np.array([e.seed_df for e in used])
    ratios = np.array([e.seed_ratio for e in used])
    phi, p = bartlett(ratios, dfs)
    total = float(dfs.sum())
    apart = above_the_rest(ratios, dfs) < np.array([row_level(d) for d in dfs])
    out = list(estimates)
    for i, e, alone in zip(rows, used, apart):
        if p < level:
            out[i] = replace(e, homogeneity_p=p)
        elif alone:
            out[i] = replace(e, homogeneity_p=p, seed_df=e.seed_df + SET_APART_SHARE * (total - e.seed_df))
        else:
            out[i] = replace(e, homogeneity_p=p, seed_ratio=phi, seed_df=total, pooled=len(used))
    return out


@dataclass(frozen=True)
class Welch:
    """The difference of two published means, each over ``n_runs`` runs with the given stds.

    A table gives no pairing and no per-example flags, so this is the unpaired Welch interval and it
    covers seed-to-seed variation only (what a std over runs on one test set measures). ``df`` is given where
    both stds are one estimate pooled over a column (:func:`pool_stds`), with its degrees of freedom; then the
    two pieces are one, not two independent ones.
    """
    mean: float
    std: float
    base_std: float
    n_runs: int
    df: float | None = None

    @property
    def seeds_known(self) -> bool:
        return self.n_runs > 1

    def pieces(self, n_runs: np.ndarray | int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        n = np.asarray(self.n_runs if n_runs is None else n_runs, dtype=float)
        if self.df is None:
            return [(self.std ** 2 / n, n - 1), (self.base_std ** 2 / n, n - 1)]
        return [((self.std ** 2 + self.base_std ** 2) / n, self.df + (n - self.n_runs) * self.df / (self.n_runs - 1))]


def pool_stds(stds: np.ndarray, runs: int, level: float = HOMOGENEITY_LEVEL) -> tuple[np.ndarray, float]:
    """(stds, degrees of freedom of each) of a published column's rows, each a std over ``runs`` runs: one
    pooled std for all if Bartlett's test finds them homogeneous at ``level``, else their own."""
    stds = np.asarray(stds, dtype=float)
    if runs < 2 or len(stds) < 2 or (stds <= 0).any():
        return stds, float(runs - 1)
    pooled, p = bartlett(stds ** 2, np.full(len(stds), runs - 1.0))
    if p < level:
        return stds, float(runs - 1)
    return np.full(len(stds), math.sqrt(pooled)), float(len(stds) * (runs - 1))


@dataclass(frozen=True)
class Versus:
    """Ours − a published mean over ``paper_runs`` runs on the same test set: our estimate on that test set
    plus the paper's own seed noise (its variance over runs, with ``paper_df`` degrees of freedom)."""
    ours: Crossed
    paper_mean: float
    paper_std: float
    paper_runs: int
    paper_df: float

    @property
    def mean(self) -> float:
        return self.ours.mean - self.paper_mean

    @property
    def seeds_known(self) -> bool:
        return self.ours.seeds_known and self.paper_runs > 1

    @property
    def n_seeds(self) -> int:
        return self.ours.n_seeds

    @property
    def n_examples(self) -> int:
        return self.ours.n_examples

    def pieces(self, n_seeds: np.ndarray | int | None = None,
               n_examples: np.ndarray | int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        paper = (np.asarray(self.paper_std ** 2 / self.paper_runs, dtype=float), np.asarray(self.paper_df, dtype=float))
        return [*self.ours.pieces(n_seeds, n_examples), paper]


Estimate = Crossed | Welch | Versus


def _se_df(pieces: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(√Var, Welch–Satterthwaite degrees of freedom) of a sum of independent variance pieces."""
    var = sum(v for v, _ in pieces)
    denom = sum(np.divide(v ** 2, d, out=np.zeros_like(v * d), where=d > 0) for v, d in pieces)
    return np.sqrt(var), np.divide(var ** 2, denom, out=np.full_like(var * denom, np.inf), where=denom > 0)


def _quantile(pieces: list[tuple[np.ndarray, np.ndarray]], level: float) -> tuple[np.ndarray, np.ndarray]:
    """(√Var, t quantile at ``level``) with Welch–Satterthwaite degrees of freedom."""
    se, df = _se_df(pieces)
    return se, st.t.ppf(level, df)


def half_width(est: Estimate, confidence: float = CONFIDENCE, **design: np.ndarray | int) -> np.ndarray:
    """Half-width of the two-sided interval at ``confidence``, at the estimate's design or ``design``."""
    se, t = _quantile(est.pieces(**design), (1 + confidence) / 2)
    return se * t


def interval(est: Estimate, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """(low, high) of the two-sided ``confidence`` interval of the estimate's mean; (nan, nan) from one
    seed, whose seed-to-seed variation is unknown (an interval of the test sample alone would read as
    the whole uncertainty)."""
    if not est.seeds_known:
        return math.nan, math.nan
    h = float(half_width(est, confidence))
    return bounded(est, est.mean - h, est.mean + h)


def bounded(est: Estimate, low: float, high: float) -> tuple[float, float]:
    """(low, high) cut to the range the estimate's mean lives in (an accuracy's [0, 100]). The symmetric t
    interval runs past 100 near the edge (an all-correct table gives 100 ± 1); cutting cannot lower its
    coverage, since the truth lies inside the range, and says what the data can: nothing beyond it."""
    if not isinstance(est, Crossed):
        return low, high
    return max(low, est.bounds[0]), min(high, est.bounds[1])


def intervals(estimates: Sequence[Estimate | None], confidence: float = CONFIDENCE) -> np.ndarray:
    """(n, 2) array of each estimate's interval; nan where there is no estimate or only one seed."""
    return np.array([interval(e, confidence) if e is not None else (math.nan, math.nan) for e in estimates],
                    dtype=float).reshape(-1, 2)


def p_above(est: Estimate, threshold: float) -> float:
    """One-sided p-value of "the mean is at most ``threshold``" against "above it" (nan from one seed): the
    test whose rejection at (1 − confidence)/2 is the interval lying above the threshold."""
    if not est.seeds_known:
        return math.nan
    se, df = _se_df(est.pieces())
    return float(st.t.sf((est.mean - threshold) / se, df))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment (Holm 1979): reject the i-th smallest p while each adjusted p ≤ α keeps the
    family-wise error ≤ α for any dependence between the tests. nan stays nan and counts in no family."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    known = np.flatnonzero(~np.isnan(p))
    order = known[np.argsort(p[known], kind="stable")]
    m = len(order)
    out[order] = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    return out


def min_detectable(est: Estimate, confidence: float = CONFIDENCE, power: float = POWER) -> float:
    """The true difference from a fixed value that this design detects at ``confidence`` with probability
    ``power`` *if the observed spread is the true one*: (t_(1+c)/2 + t_power) · SE; nan from one seed."""
    if not est.seeds_known:
        return math.nan
    return float(_detectable(est.pieces(), confidence, power))


def _detectable(pieces: list[tuple[np.ndarray, np.ndarray]], confidence: float, power: float) -> np.ndarray:
    se, t_alpha = _quantile(pieces, (1 + confidence) / 2)
    return se * (t_alpha + _quantile(pieces, power)[1])


def to_decide(est: Estimate, gap: float, grow: str, confidence: float = CONFIDENCE, power: float = POWER,
              limit: int | None = None) -> int | None:
    """The smallest value of ``grow`` (``n_seeds``, ``n_examples`` or ``n_runs``) at which a true difference of
    ``|gap|`` from the threshold (the observed one) is decided with probability ``power``, the other sizes and
    the observed spread kept; None if no design up to ``limit`` (examples: the test set's size),
    ``MAX_SEEDS`` or ``MAX_EXAMPLES`` does, or if the estimate is from one seed and ``grow`` counts seeds
    (the seed spread to project is unknown).
    """
    if grow != "n_examples" and not est.seeds_known:
        return None
    current = getattr(est, grow)
    if grow == "n_examples":
        sizes = np.unique(np.ceil(current * 1.05 ** np.arange(1, 400)).astype(np.int64))
        sizes = sizes[sizes <= min(MAX_EXAMPLES, limit or MAX_EXAMPLES)]
    else:
        sizes = np.arange(max(current + 1, 2), MAX_SEEDS + 1)
    if not len(sizes):
        return None
    enough = _detectable(est.pieces(**{grow: sizes}), confidence, power) <= abs(gap)
    return int(sizes[np.argmax(enough)]) if enough.any() else None
