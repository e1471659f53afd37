"""Coverage, verdict error rates and power of the tables' statistics, on simulated grids.

The generator deliberately does not share the estimator's model. ``part.analysis.stats`` assumes additive seed,
example and interaction effects on the 0/100 scale; here every outcome is a threshold of a latent
probit score with

* a per-example difficulty (sd 1.5, so a third of natural and an eighth of AA examples are right or wrong
  in > 99 % of runs), class effects (10 classes) and per-row offsets;
* PART's effect as a probit shift plus per-class and per-example effects (some examples gain, some lose);
* per-seed shifts shared by a base run and its PART runs of that seed (same initialisation and data
  order), PART's own per-seed shift, per-seed class effects (a seed that is better at cats: correlated
  flips), and per-run, per-example noise correlated between paired runs;
* seed-level spreads that differ between the rows of one column (``Spread.uneven``).

The truths are exact, not Monte Carlo: every latent term is Gaussian, so the expected accuracy of a row
over seeds and examples is an average over classes of normal CDFs, and PART's probit shift is solved so
that PART − base equals the stated effect. A grid is one dataset of the paper: three families, each a base
method and two PART rows (s = 1, s = 10), natural accuracy and AA. It goes through the pipeline's own
entry points: ``part.analysis.aggregate.estimates`` per cell, ``part.analysis.stats.pool`` per column, ``part.analysis.stats.interval``
and ``part.analysis.compare.judge``.

    python benchmarks/calibration.py [--grids 200] [--quick] [--out calibration.json]

prints one JSON line per setting (coverage of a cell, of a PART − base difference and of a cell on its
test set; mean half-width; share of columns pooled; verdict rates) and a summary table; ``--out`` writes all.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import optimize
from scipy.special import ndtr

from part.analysis import aggregate, compare, stats

CLASSES = 10
DIFFICULTY_SD = 1.5
FAMILIES = ("at", "trades", "mart")
PART_ROWS = ("s1", "s10")
LEVELS = {"natural": 1.4, "aa": -0.3}
"""Probit intercepts: ≈ 83 % natural and ≈ 42 % AA accuracy, the paper's CIFAR-10 AT row."""
PAIR_CORRELATION = 0.6
"""Correlation of a base run's and its PART run's per-example noise (they share the warm-up)."""
EXAMPLE_EFFECT_SD = 0.3
CLASS_EFFECT_SD = 0.5
PART_CLASS_SD = 0.15


@dataclass(frozen=True)
class Spread:
    """Run-to-run noise: per-run example noise (``flip``, probit sd) and seed-level shifts (``seed``, probit sd,
    each row's multiplied by a factor drawn log-uniformly from [1/uneven, uneven]); ``outlier`` multiplies the
    own seed shift of one PART row (:data:`OUTLIER_ROW`); ``part_ratio``, if set, makes every PART row's seed-level
    sd that many times its base's; ``level_shift`` (probit) moves every accuracy up (near 100 %)."""
    name: str
    flip: float
    seed: float
    uneven: float = 1.5
    outlier: float = 1.0
    part_ratio: float | None = None
    level_shift: float = 0.0


SPREADS = {s.name: s for s in (Spread("tight", 0.1, 0.002), Spread("typical", 0.5, 0.01),
                               Spread("wide", 1.0, 0.03), Spread("uneven", 0.5, 0.01, uneven=4.0),
                               Spread("outlier-row", 0.5, 0.01, outlier=4.0),
                               Spread("spread-ratio", 0.5, 0.01, part_ratio=3.0),
                               Spread("near-100", 0.5, 0.01, level_shift=2.5))}
"""Seed stds of one accuracy at 10 000 examples ≈ 0.06 (tight), 0.3 (typical), 0.7 (wide) points: the
range of the paper's printed stds (0.03–0.67, median 0.14); ``uneven`` gives one column's rows seed-level
spreads up to 16× apart; ``outlier-row`` one PART row whose difference to its base has 4× the seed-level sd of
its siblings'; ``spread-ratio`` PART cells 3× the base cells' seed-level sd; ``near-100`` accuracies near 100 %
(≈ 99 % natural, ≈ 90 % AA), where an interval of ± a few points would run past 100."""
TRUE_EFFECTS = {"near-100": (0.2, 1.0)}
"""The claim true with margin (Δ natural, Δ AA) where +4 / +1 would pass 100 %."""
OUTLIER_ROW = "at_s1"
"""The PART row ``Spread.outlier`` applies to."""


@dataclass(frozen=True)
class Setting:
    seeds: int
    examples: int
    spread: str
    natural_effect: float
    aa_effect: float


def _solve_shift(level: np.ndarray, scale: float, base: float, effect: float) -> float:
    """The probit shift at which a row's exact accuracy is ``base`` + ``effect`` (points)."""
    def gap(shift: float) -> float:
        return 100 * ndtr((level + shift) / scale).mean() - base - effect
    return optimize.brentq(gap, -8, 8, xtol=1e-10)


class World:
    """One dataset's rows for one attack: fixed class effects, offsets and PART effects (the data
    distribution a real grid's test set is drawn from), and how its runs vary."""

    def __init__(self, rng: np.random.Generator, attack: str, spread: Spread, effect: float):
        self.rng, self.spread = rng, spread
        self.classes = rng.normal(0, CLASS_EFFECT_SD, CLASSES)
        self.rows: dict[str, dict] = {}
        self.truth: dict[str, float] = {}
        for family in FAMILIES:
            level = LEVELS[attack] + spread.level_shift + rng.normal(0, 0.1) + self.classes
            factor = lambda: spread.seed * np.exp(rng.uniform(-1, 1) * np.log(spread.uneven))  # noqa: E731
            shared, own_class = factor(), factor()
            base_scale = np.sqrt(DIFFICULTY_SD ** 2 + shared ** 2 + own_class ** 2 + spread.flip ** 2)
            base_truth = 100 * ndtr(level / base_scale).mean()
            self.rows[family] = {"level": level, "shared": shared, "class_sd": own_class}
            self.truth[family] = base_truth
            for row in PART_ROWS:
                own = factor() * (spread.outlier if f"{family}_{row}" == OUTLIER_ROW else 1.0)
                if spread.part_ratio is not None:
                    own = np.sqrt(spread.part_ratio ** 2 - 1) * np.hypot(shared, own_class)
                per_class = rng.normal(0, PART_CLASS_SD, CLASSES)
                scale = np.sqrt(base_scale ** 2 + EXAMPLE_EFFECT_SD ** 2 + own ** 2)
                shift = _solve_shift(level + per_class, scale, base_truth, effect)
                self.rows[f"{family}_{row}"] = {"part_of": family, "level": level + per_class + shift, "own": own}
                self.truth[f"{family}_{row}"] = base_truth + effect

    def draw(self, seeds: int, examples: int) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """(correct flags (seeds, examples) per row, each row's accuracy on this test set averaged over seeds)."""
        rng, spread = self.rng, self.spread
        label = rng.integers(0, CLASSES, examples)
        difficulty = rng.normal(0, DIFFICULTY_SD, examples)
        flags, on_test = {}, {}
        for family in FAMILIES:
            base = self.rows[family]
            seed_shift = rng.normal(0, base["shared"], (seeds, 1)) + rng.normal(0, base["class_sd"], (seeds, CLASSES))[:, label]
            noise = rng.normal(0, spread.flip, (seeds, examples))
            latent = base["level"][label] + difficulty
            flags[family] = latent + seed_shift + noise > 0
            run_var = base["shared"] ** 2 + base["class_sd"] ** 2 + spread.flip ** 2
            on_test[family] = 100 * ndtr(latent / np.sqrt(run_var)).mean()
            for row in PART_ROWS:
                part = self.rows[f"{family}_{row}"]
                example_effect = rng.normal(0, EXAMPLE_EFFECT_SD, examples)
                own_noise = PAIR_CORRELATION * noise + np.sqrt(1 - PAIR_CORRELATION ** 2) * rng.normal(
                    0, spread.flip, (seeds, examples))
                part_latent = part["level"][label] + difficulty + example_effect
                flags[f"{family}_{row}"] = (part_latent + seed_shift + rng.normal(0, part["own"], (seeds, 1))
                                            + own_noise > 0)
                on_test[f"{family}_{row}"] = 100 * ndtr(part_latent / np.sqrt(run_var + part["own"] ** 2)).mean()
        return flags, on_test


def _as_flags(attack: str, flags: dict[str, np.ndarray]) -> aggregate.Flags:
    """The simulated table in the shape ``part.analysis.aggregate.correct_flags`` gives the real one."""
    index = np.arange(next(iter(flags.values())).shape[1])
    return {("sim", row, attack): {seed: (index, f[seed]) for seed in range(f.shape[0])} for row, f in flags.items()}


def _column(attack: str, flags: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(cell estimates, PART − base estimates) of one attack, each column pooled as the tables pool it."""
    table = _as_flags(attack, flags)
    rows = list(flags)
    pairs = [aggregate.estimates(table, "sim", row, row.split("_")[0] if "_" in row else None, attack) for row in rows]
    frame = pd.DataFrame({"dataset": "sim", "attack": attack, "part": ["_" in r for r in rows],
                          "estimate": [p[0] for p in pairs]})
    cells = dict(zip(rows, aggregate.pooled(frame, "estimate", aggregate.CELL_POOLS)))
    parts = [r for r in rows if "_" in r]
    diffs = dict(zip(parts, stats.pool([p[1] for p, r in zip(pairs, rows) if "_" in r])))
    return cells, diffs


PAPER_RUNS = 3
PAPER_GAP = 2.0
"""The reproduction check: 'the paper' is PAPER_RUNS more runs of the same world on the same test set, published as
mean ± std per row; once as they are (ours reproduces it) and once shifted by PAPER_GAP points (ours does not)."""
MAX_GROWN_SEEDS = 12


def _reproduction(flags: dict[str, np.ndarray], cells: dict[str, stats.Crossed], seeds: int, examples: int,
                  confidence: float) -> dict[str, int]:
    """Verdicts of ours − paper per row, for a paper of the same distribution and one PAPER_GAP points away."""
    published = {row: 100 * f[seeds:].mean(1) for row, f in flags.items()}
    stds, df = stats.pool_stds([p.std(ddof=1) for p in published.values()], PAPER_RUNS)
    settings = compare.Settings(confidence, PAPER_RUNS)
    counts = {"same_reproduced": 0, "same_differs": 0, "gap_reproduced": 0, "gap_differs": 0}
    for (row, paper), sd in zip(published.items(), stds):
        ours = stats.on_test_set(cells[row], examples)
        for case, shift in (("same", 0.0), ("gap", PAPER_GAP)):
            verdict, _ = compare.reproduction(stats.Versus(ours, paper.mean() + shift, sd, PAPER_RUNS, df), settings,
                                              examples, "Natural")
            counts[f"{case}_{verdict}"] = counts.get(f"{case}_{verdict}", 0) + 1
    return counts


def _suggested_seeds(estimates: dict[str, stats.Crossed], confidence: float) -> int | None:
    """The seeds an inconclusive claim's advice asks for: the most any open criterion needs (None: none would)."""
    needed = []
    for c in compare.Claim().criteria:
        est = estimates[c.attack]
        if c.status(*stats.interval(est, confidence)) == "open":
            needed.append(stats.to_decide(est, est.mean - c.threshold, "n_seeds", confidence))
    return None if None in needed or not needed else max(needed)


def run_setting(setting: Setting, grids: int, seed: int = 0, confidence: float = stats.CONFIDENCE) -> dict:
    """Coverage, verdict and reproduction rates of ``grids`` simulated grids of one setting (see the module
    docstring), and how often an inconclusive claim grown to the seeds its advice names is then decided."""
    rng = np.random.default_rng([seed, setting.seeds, setting.examples, int(100 * setting.natural_effect),
                                 int(100 * setting.aa_effect), list(SPREADS).index(setting.spread)])
    spread, k, n = SPREADS[setting.spread], setting.seeds, setting.examples
    counts = {key: 0 for key in ("cell", "diff", "on_test", "cells", "diffs", "pooled", "columns", "grown",
                                 "grown_decided", "any_holds", "any_holds_holm", "beyond_range")}
    reproduction: dict[str, int] = {}
    widths = {"cell": [], "diff": []}
    verdicts = {"holds": 0, "does not hold": 0, "inconclusive": 0}
    seed_sds = []
    per_row = {key: {} for key in ("cell", "diff", "holds")}

    def tally(key: str, row: str, hit: bool) -> None:
        per_row[key][row] = per_row[key].get(row, 0) + hit

    for _ in range(grids):
        claims, worlds = {}, {}
        for attack, effect in (("natural", setting.natural_effect), ("aa", setting.aa_effect)):
            world = worlds[attack] = World(rng, attack, spread, effect)
            drawn, on_test = world.draw(k + PAPER_RUNS, n)
            flags = {row: f[:k] for row, f in drawn.items()}
            cells, diffs = _column(attack, flags)
            for row, est in cells.items():
                low, high = stats.interval(est, confidence)
                counts["cell"] += low <= world.truth[row] <= high
                counts["beyond_range"] += int(low < 0 or high > 100)
                tally("cell", f"{attack}/{row}", low <= world.truth[row] <= high)
                widths["cell"].append((high - low) / 2)
                low, high = stats.interval(stats.on_test_set(est, n), confidence)
                counts["on_test"] += low <= on_test[row] <= high
                seed_sds.append(float(np.std(100 * flags[row].mean(1), ddof=1)))
            for row, est in diffs.items():
                low, high = stats.interval(est, confidence)
                covered = low <= world.truth[row] - world.truth[row.split("_")[0]] <= high
                counts["diff"] += covered
                tally("diff", f"{attack}/{row}", covered)
                widths["diff"].append((high - low) / 2)
                claims.setdefault(row, {})[attack] = est
            counts["cells"] += len(cells)
            counts["diffs"] += len(diffs)
            counts["pooled"] += sum(e.pooled > 1 for e in (next(iter(cells.values())), next(iter(diffs.values()))))
            counts["columns"] += 2
            if attack == "natural":
                for key, value in _reproduction(drawn, cells, k, n, confidence).items():
                    reproduction[key] = reproduction.get(key, 0) + value
        said = []
        for row, estimates in claims.items():
            verdict, _ = compare.judge(estimates, confidence, lambda *_: "")
            verdicts[verdict] += 1
            tally("holds", row, verdict == "holds")
            said.append(verdict)
            grown = _suggested_seeds(estimates, confidence) if verdict == "inconclusive" else None
            if grown is not None and grown <= MAX_GROWN_SEEDS and counts["grown"] < grids // 4:
                regrown = {attack: _column(attack, worlds[attack].draw(grown, n)[0])[1][row] for attack in estimates}
                counts["grown"] += 1
                counts["grown_decided"] += compare.judge(regrown, confidence, lambda *_: "")[0] != "inconclusive"
        counts["any_holds"] += "holds" in said
        holm = stats.holm([compare.holds_p(estimates) for estimates in claims.values()])
        counts["any_holds_holm"] += bool((holm <= (1 - confidence) / 2).any())
    n_claims, n_versus = sum(verdicts.values()), counts["cells"] // 2
    return {**asdict(setting), "grids": grids,
            "coverage_cell": counts["cell"] / counts["cells"], "coverage_diff": counts["diff"] / counts["diffs"],
            "coverage_on_test_set": counts["on_test"] / counts["cells"],
            "cells_beyond_range": counts["beyond_range"],
            "coverage_cell_row_min": min(per_row["cell"].values()) / grids,
            "coverage_diff_row_min": min(per_row["diff"].values()) / grids,
            "holds_row_max": max(per_row["holds"].values()) / grids,
            "holds_row_min": min(per_row["holds"].values()) / grids,
            "half_width_cell": float(np.mean(widths["cell"])), "half_width_diff": float(np.mean(widths["diff"])),
            "seed_sd_cell": float(np.median(seed_sds)), "pooled_share": counts["pooled"] / counts["columns"],
            **{f"verdict_{key.replace(' ', '_')}": v / n_claims for key, v in verdicts.items()},
            "grids_any_holds": counts["any_holds"] / grids, "grids_any_holds_holm": counts["any_holds_holm"] / grids,
            "grown": counts["grown"], "grown_decided": counts["grown_decided"] / max(counts["grown"], 1),
            **{f"paper_{key}": reproduction.get(key, 0) / n_versus for key in
               ("same_reproduced", "same_differs", "gap_reproduced", "gap_differs")}}


def settings(quick: bool, seeds: list[int] | None = None, examples: list[int] | None = None,
             spreads: list[str] | None = None) -> list[Setting]:
    """The grid of settings: K × n × spread × true effect (null claim, and the claim true with margin); ``quick``
    is 3 seeds and 2 000 examples, and ``seeds``, ``examples``, ``spreads`` narrow it further."""
    seeds = seeds or ([3] if quick else [2, 3, 5])
    examples = examples or ([2000] if quick else [200, 2000, 10_000])
    return [Setting(k, n, s, *e) for k, n, s in itertools.product(seeds, examples, spreads or SPREADS)
            for e in ((0.0, 0.0), TRUE_EFFECTS.get(s, (4.0, 1.0)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=int, default=200, help="simulated grids per setting")
    parser.add_argument("--quick", action="store_true", help="one design (3 seeds, 2 000 examples) only")
    parser.add_argument("--seeds", type=int, nargs="+", help="only these seed counts")
    parser.add_argument("--examples", type=int, nargs="+", help="only these test-set sizes")
    parser.add_argument("--spreads", nargs="+", choices=list(SPREADS), help="only these worlds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write every setting's result as JSON here")
    args = parser.parse_args(argv)
    results = []
    for setting in settings(args.quick, args.seeds, args.examples, args.spreads):
        start = time.perf_counter()
        result = run_setting(setting, args.grids, args.seed) | {"seconds": round(time.perf_counter() - start, 2)}
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
