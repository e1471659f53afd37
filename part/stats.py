"""Confidence intervals for accuracies that vary with the seed and with the test sample, and for
PART − base differences, with what more data would settle a question the interval leaves open.

An accuracy here is the mean of a seeds × test-examples table of outcomes (100 = correct, 0 = not;
for a paired difference of two runs +100 / 0 / −100). Two sources of noise are crossed: every seed
sees the same test examples, so the test sample's luck is shared by all seeds and is *not* visible
in the seed-to-seed spread (nor is seed luck visible in a binomial error). The model is the two-way
random-effects one, x[k, i] = μ + a_k + b_i + e_ki (seed, example, interaction), and the variance of
the grand mean over K seeds and N examples is

    Var = σ_a²/K + σ_b²/N + σ_e²/(KN) = s²(seed means)/K + (s²(example means) − σ_e²/K)/N,

whose two pieces are estimated by mean squares without bias (σ_e² by the interaction mean square).
The interval is mean ± t·√Var with Welch–Satterthwaite degrees of freedom: the seed piece has only
K − 1 of them, so two or three seeds give the wide interval they deserve, where a bootstrap over
seeds would pretend to know the seed variance from two values (see docs/statistics.md). Two guards
keep a small table from looking certain: the seed piece is never below the run-to-run noise the
interaction term alone implies (σ_e²/N per seed), and the example piece never below that of a test
sample with one example at each extreme (so 20/20 correct, or two runs that agree on every example,
still leave an interval).

Everything is closed-form and numpy-vectorised over examples; no resampling, so no seed is needed
and the result is the same on every machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as st

CONFIDENCE = 0.95
"""Default two-sided confidence level of every interval (the workflow's ``statistics.confidence``)."""
POWER = 0.8
"""Power at which the minimum detectable difference is quoted (the usual 80 %)."""
MAX_SEEDS = 1000
MAX_EXAMPLES = 10_000_000
"""Largest design the "what would decide it" search considers; beyond it, more data of that kind cannot."""


@dataclass(frozen=True)
class Crossed:
    """Mean and variance components of a seeds × examples table (see the module docstring).

    ``seed_var`` is σ_a² (nan with one seed: not estimable), ``example_var`` σ_b² (floored),
    ``residual_var`` σ_e² (0 with one seed, where it cannot be told from σ_b²); ``span`` is the range
    the outcomes can take (100 for accuracies, 200 for differences), which sets the example floor.
    ``population`` is None for the interval of the accuracy on the data distribution; a test-set size
    makes it the interval of the accuracy on that test set (``on_test_set``).
    """
    mean: float
    n_seeds: int
    n_examples: int
    seed_var: float
    example_var: float
    residual_var: float
    span: float
    population: int | None = None

    @property
    def seeds_known(self) -> bool:
        """Whether the seed-to-seed variation could be estimated (two seeds or more)."""
        return self.n_seeds > 1

    def pieces(self, n_seeds: np.ndarray | int | None = None,
               n_examples: np.ndarray | int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(variance, degrees of freedom) of each piece of Var(mean), at this design or a larger one.

        A design with more seeds or examples keeps the estimated components (the "observed spread").
        With one seed only the example piece is known.
        """
        k = np.asarray(self.n_seeds if n_seeds is None else n_seeds, dtype=float)
        n = np.asarray(self.n_examples if n_examples is None else n_examples, dtype=float)
        sampled = np.maximum(1 - n / self.population, 0.0) if self.population else 1.0  # finite-population correction
        example = (np.maximum(self.example_var, _example_floor(self.span, self.mean, n)) / n * sampled, n - 1)
        if not self.seeds_known:
            return [example]
        return [((self.seed_var + self.residual_var / n) / k, k - 1), example]


def on_test_set(est: Crossed, size: int) -> Crossed:
    """The estimate as one of the accuracy on a fixed test set of ``size`` examples, of which the table
    holds the first ``n_examples``: what a reproduction shares with a paper evaluated on the same test
    set, whose luck is then common to both. Only the seed piece and the subset's share of the example
    piece remain (none of it when the whole test set was evaluated)."""
    if size < est.n_examples:
        raise ValueError(f"a test set of {size} examples cannot hold the {est.n_examples} evaluated")
    return replace(est, population=size)


def crossed(x: np.ndarray, span: float) -> Crossed:
    """The variance components of a (K seeds, N examples) table of outcomes whose values span ``span``."""
    x = np.asarray(x, dtype=float)
    k, n = x.shape
    if n < 2:
        raise ValueError(f"an interval needs at least 2 test examples, got {n}")
    seed_means, example_means, grand = x.mean(1), x.mean(0), x.mean()
    if k == 1:
        return Crossed(grand, 1, n, np.nan, example_means.var(ddof=1), 0.0, span)
    residual = x - seed_means[:, None] - example_means[None, :] + grand
    residual_var = float((residual ** 2).sum() / ((k - 1) * (n - 1)))
    seed_var = max(seed_means.var(ddof=1) - residual_var / n, 0.0)
    example_var = max(example_means.var(ddof=1) - residual_var / k, 0.0)
    return Crossed(grand, k, n, seed_var, example_var, residual_var, span)


def accuracy(correct: np.ndarray) -> Crossed:
    """Components of an accuracy (%) from bool correct flags (K seeds, N examples)."""
    return crossed(100.0 * np.asarray(correct, dtype=float), span=100.0)


def paired_difference(correct: np.ndarray, base: np.ndarray) -> Crossed:
    """Components of accuracy(correct) − accuracy(base) (points) from flags paired by seed and example.

    Row k of both tables must be runs of the same seed (shared initialisation and data order) and
    column i the same test example; pairing removes what the two runs share from the noise.
    """
    diff = np.asarray(correct, dtype=float) - np.asarray(base, dtype=float)
    return crossed(100.0 * diff, span=200.0)


def _example_floor(span: float, mean: float, n: np.ndarray) -> np.ndarray:
    """The example-mean variance of a sample with one example at each end of the range, the others at
    the mean (the range is [0, span] for accuracies, [−span/2, span/2] for differences)."""
    low = 0.0 if span == 100.0 else -span / 2
    return ((low - mean) ** 2 + (low + span - mean) ** 2) / (n - 1)


@dataclass(frozen=True)
class Welch:
    """The difference of two published means, each over ``n_runs`` runs with the given stds.

    A table gives no pairing and no per-example flags, so this is the unpaired Welch interval and it
    covers seed-to-seed variation only (what a std over runs on one test set measures).
    """
    mean: float
    std: float
    base_std: float
    n_runs: int

    @property
    def seeds_known(self) -> bool:
        return self.n_runs > 1

    def pieces(self, n_runs: np.ndarray | int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        n = np.asarray(self.n_runs if n_runs is None else n_runs, dtype=float)
        return [(self.std ** 2 / n, n - 1), (self.base_std ** 2 / n, n - 1)]


Estimate = Crossed | Welch


def _quantile(pieces: list[tuple[np.ndarray, np.ndarray]], level: float) -> tuple[np.ndarray, np.ndarray]:
    """(√Var, t quantile at ``level``) with Welch–Satterthwaite degrees of freedom."""
    var = sum(v for v, _ in pieces)
    denom = sum(np.divide(v ** 2, d, out=np.zeros_like(v * d), where=d > 0) for v, d in pieces)
    df = np.divide(var ** 2, denom, out=np.full_like(var * denom, np.inf), where=denom > 0)
    return np.sqrt(var), st.t.ppf(level, df)


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
    return est.mean - h, est.mean + h


def min_detectable(est: Estimate, confidence: float = CONFIDENCE, power: float = POWER) -> float:
    """The smallest true difference from a fixed value that this design would detect at ``confidence``
    with probability ``power``: (t_(1+c)/2 + t_power) · SE; nan from one seed."""
    if not est.seeds_known:
        return math.nan
    pieces = est.pieces()
    se, t_alpha = _quantile(pieces, (1 + confidence) / 2)
    return float(se * (t_alpha + _quantile(pieces, power)[1]))


def to_decide(est: Estimate, gap: float, grow: str, confidence: float = CONFIDENCE) -> int | None:
    """The smallest value of ``grow`` (``n_seeds``, ``n_examples`` or ``n_runs``) at which the interval's
    half-width drops below ``|gap|`` (the distance from the estimate to a threshold), the other sizes
    and the observed spread kept; None if no design up to ``MAX_SEEDS`` / ``MAX_EXAMPLES`` does, or if
    the estimate is from one seed and ``grow`` counts seeds (the seed spread to project is unknown).
    """
    if grow != "n_examples" and not est.seeds_known:
        return None
    current = est.n_examples if grow == "n_examples" else (est.n_runs if grow == "n_runs" else est.n_seeds)
    if grow == "n_examples":
        sizes = np.unique(np.ceil(current * 1.05 ** np.arange(1, 400)).astype(np.int64))
        sizes = sizes[sizes <= MAX_EXAMPLES]
    else:
        sizes = np.arange(max(current + 1, 2), MAX_SEEDS + 1)
    enough = half_width(est, confidence, **{grow: sizes}) < abs(gap)
    return int(sizes[np.argmax(enough)]) if enough.any() else None

