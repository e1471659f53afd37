"""The paper's numbers beside ours: cell by cell, and its claim family by family.

Rows of the paper are matched to the grid's variants by what was run, never by label: (dataset,
architecture, base method, PART or not, s = ``mask.refresh_every``), each read from the variant's run
config (``part.analysis.aggregate.variant_table``). Only a dataset trained with the paper's architecture is
compared; a grid of other data (the digits demo) gets a comparison that says no cell matches.

The claim checked is this pipeline's reading of the paper's headline (:class:`Claim`): *PART raises natural
accuracy without lowering AA by more than the tolerance* (0.5 points by default, ``statistics.claim``), against
the family's base method. It is judged on confidence intervals, three ways: *holds* when the interval of
Δ natural lies above 0 and that of Δ AA at or above −tolerance, *does not hold* when an interval lies wholly on
the wrong side, *inconclusive* otherwise — with what would settle it. Ours come from the per-example flags (``part.analysis.stats``, paired by seed and example), the
paper's from its means and stds over its runs (Welch). Both intervals and the rule: docs/statistics.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from part.analysis import stats
from part.analysis.tablefmt import COLUMNS, MARKDOWN, dataset_name, format_cell, format_interval, signed
from part.base.grid import REPRODUCTION_TOLERANCE

PAPER_RUNS = 3
"""Runs behind each of the paper's mean ± std (not stated in the paper; the workflow's ``statistics.paper_runs``)."""
PRINTED_STD_FLOOR = 0.005
"""The smallest std a printed "± 0.00" can stand for, half its last digit: a std of 0 would make the interval of a
difference to the paper zero-wide and its p-value undefined."""
MATCH_KEYS = ["dataset", "arch", "base_method", "part", "s_key"]
PROTOCOLS = {"aa_release": "the release's torchattacks AutoAttack, 10 iterations per APGD/FAB attack: the paper's",
             "aa": "fra31's standard AutoAttack, 100 iterations per APGD/FAB attack: stronger than the paper's"}
"""Our AutoAttack protocols, as the comparison names them beside the paper's AA column."""


def load_reference(name: str) -> pd.DataFrame:
    """A published table shipped with the package (``part/reference/NAME.csv``; provenance in its README)."""
    path = resources.files("part").joinpath(f"reference/{name}.csv")
    if not path.is_file():
        raise FileNotFoundError(f"part/reference/{name}.csv: no such reference table is installed with the package")
    with path.open() as f:
        return pd.read_csv(f)


def paper_cells(reference: pd.DataFrame) -> pd.DataFrame:
    """paper_table1.csv as one row per (dataset, arch, paper row, attack), with the keys our variants match on."""
    attacks = [c.removesuffix("_mean") for c in reference.columns if c.endswith("_mean")]
    rows = []
    for r in reference.to_dict("records"):
        part = r["method"] != r["base"]
        if part and pd.isna(r["s"]):
            raise ValueError(f"paper_table1.csv: the PART row {r['dataset']}/{r['method']} has no s")
        s = int(r["s"]) if part else pd.NA
        negative = [a for a in attacks if not float(r[f"{a}_std"]) >= 0]
        if negative:
            raise ValueError(f"paper_table1.csv: {r['dataset']}/{r['method']} has std {r[f'{negative[0]}_std']} for "
                             f"{negative[0]}; a std is a number ≥ 0")
        label = f"{r['method']} (s = {s})" if part else r["method"]
        rows += [{"dataset": r["dataset"], "arch": r["arch"], "paper_method": label, "base_method": r["base"].lower(),
                  "part": part, "s": s, "attack": a, "paper_mean": float(r[f"{a}_mean"]),
                  "paper_std": float(r[f"{a}_std"])} for a in attacks]
    return _keyed(pd.DataFrame(rows))


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """``s`` as a nullable integer and ``s_key`` (0 for base methods) to match on."""
    frame = frame.assign(s=frame["s"].astype("Int64"))
    return frame.assign(s_key=frame["s"].fillna(0).astype(int))


def _variants(table: pd.DataFrame) -> pd.DataFrame:
    keys = ["dataset", "arch", "variant", "label", "family", "base_method", "part", "s", "base_variant"]
    return _keyed(table.drop_duplicates(["dataset", "arch", "variant"])[keys])


@dataclass(frozen=True)
class Criterion:
    """One half of the claim: Δ (PART − base, points) above ``threshold`` (or equal, if ``inclusive``)."""
    name: str
    attack: str
    threshold: float
    inclusive: bool

    def status(self, low: float, high: float) -> str:
        """"pass" if the whole interval satisfies it, "fail" if none of it does, else "open"."""
        eps = 1e-9  # differences of means in 0.01-point steps: −0.5 must read as −0.5
        if (low >= self.threshold - eps) if self.inclusive else (low > self.threshold + eps):
            return "pass"
        if (high < self.threshold - eps) if self.inclusive else (high <= self.threshold + eps):
            return "fail"
        return "open"

    def failure(self) -> str:
        return f"{self.name} {'<' if self.inclusive else '≤'} {signed(self.threshold)}"


@dataclass(frozen=True)
class Claim:
    """The paper's sentence — "a notable improvement in accuracy without compromising robustness" (abstract) —
    read as a test: Δ natural > 0, and Δ AA ≥ −``aa_tolerance`` points (``statistics.claim.aa_tolerance``).

    The paper does not quantify "without compromising". The default, 0.5 points, is about the largest
    run-to-run std the paper prints for AA (0.04–0.67, median 0.13): a loss smaller than that is what its own
    table treats as noise. Its worst row (CIFAR-10 PART-M, s = 10, vs MART: −0.49) sits just inside; at 0 three
    of its 18 rows would fail on their means. ``claim_verdicts.md`` therefore also reports the verdicts at 0 and
    at 1 point (:data:`SENSITIVITY`), so that no conclusion rests on this one number unseen.
    """
    aa_tolerance: float = 0.5

    @property
    def criteria(self) -> tuple[Criterion, Criterion]:
        return (Criterion("Δ natural", "natural", 0.0, False), Criterion("Δ AA", "aa", -self.aa_tolerance, True))

    def sentence(self) -> str:
        return f"PART raises natural accuracy without lowering AA by more than {self.aa_tolerance:g} points"


SENSITIVITY = (0.0, 0.5, 1.0)
"""The AA tolerances ``claim_verdicts.md`` also states the verdicts at (all but the configured one): none, the
default, and a loss the size of the reproduction tolerance."""


@dataclass(frozen=True)
class Settings:
    """The workflow's ``statistics`` section: interval level, runs assumed behind each of the paper's
    mean ± std, the tolerance (points) within which a cell counts as reproduced, and the claim."""
    confidence: float = stats.CONFIDENCE
    paper_runs: int = PAPER_RUNS
    tolerance: float = REPRODUCTION_TOLERANCE
    claim: Claim = Claim()


def paper_vs_reproduction(table: pd.DataFrame, paper: pd.DataFrame, settings: Settings,
                          test_sets: dict[str, int | None]) -> pd.DataFrame:
    """Every cell the paper reports for a (dataset, arch) of this grid, beside ours, as a two-sample question.

    ``table`` is the main table's cells (``part.analysis.aggregate.cells``). Per cell: the paper's mean and std (and the
    std used: pooled over its column where homogeneous, ``part.analysis.stats.pool_stds``), ours (mean, sample std,
    n_seeds, missing seeds, our own interval and the test examples it rests on), the difference ours − paper
    with its interval — our seed noise plus the paper's over ``settings.paper_runs`` runs — the equivalence
    verdict at ``settings.tolerance`` (``reproduction``), the difference a design like ours detects with 80 %
    power at the observed spreads, and a status: compared / no such variant in this grid / attack not
    evaluated / no results yet.

    The paper evaluated the whole test set, and ours evaluated the first examples of the same one (``test_sets``
    gives its size): the test sample's luck is common to both and only seeds and an evaluated subset's share
    remain (``part.analysis.stats.on_test_set``). Where the size is unknown (None), ours is on the data distribution
    (wider).
    """
    variants = _variants(table)
    grid = set(zip(variants["dataset"], variants["arch"]))
    published = _pooled_paper(paper, settings.paper_runs)
    published = published[[(d, a) in grid for d, a in zip(published["dataset"], published["arch"])]]
    matched = published.merge(variants[[*MATCH_KEYS, "variant", "label"]], on=MATCH_KEYS, how="left")
    matched["ours_attack"] = matched["attack"].replace({"aa": aa_protocol(table)})
    stats_cols = ["mean", "std", "n_seeds", "missing_seeds", "n_examples", "estimate"]
    ours = table[["dataset", "arch", "variant", "attack", *stats_cols]].rename(columns={"attack": "ours_attack"})
    out = matched.merge(ours, on=["dataset", "arch", "variant", "ours_attack"], how="left")
    out = out.rename(columns={c: f"ours_{c}" for c in stats_cols} | {"label": "ours_label", "variant": "ours_variant"})
    out = _beside_standard_aa(out, table)
    out["ours_n_seeds"] = out["ours_n_seeds"].astype("Int64")
    out["ours_estimate"] = [_on_test_set(e, test_sets.get(d)) for e, d in zip(out["ours_estimate"], out["dataset"])]
    out[["ours_ci_low", "ours_ci_high"]] = stats.intervals(out["ours_estimate"], settings.confidence)
    out["interval_on"] = ["" if e is None else ("this test set" if e.population else "the data distribution")
                          for e in out["ours_estimate"]]
    versus = [None if e is None else stats.Versus(e, m, sd, settings.paper_runs, df) for e, m, sd, df in
              zip(out["ours_estimate"], out["paper_mean"], out["paper_pooled_std"], out["paper_df"])]
    out["diff"] = out["ours_mean"] - out["paper_mean"]
    out[["diff_low", "diff_high"]] = stats.intervals(versus, settings.confidence)
    judged = [_protocol_differs(a) if v is not None and a == "aa" else
              reproduction(v, settings, test_sets.get(d), COLUMNS[a]) if v is not None else ("", "")
              for v, d, a in zip(versus, out["dataset"], out["ours_attack"])]
    out["reproduction"], out["reproduction_detail"] = [j[0] for j in judged], [j[1] for j in judged]
    out["p_differs"] = [differs_p(v, settings.tolerance) if r not in ("", "protocols differ") else math.nan
                        for v, r in zip(versus, out["reproduction"])]
    out["p_differs_holm"] = stats.holm(out["p_differs"])
    out["min_detectable"] = [np.nan if v is None else stats.min_detectable(v, settings.confidence) for v in versus]
    out["status"] = [_status(v, n) for v, n in zip(out["ours_variant"], out["ours_n_seeds"])]
    return out[["dataset", "arch", "paper_method", "base_method", "s", "attack", "ours_attack", "paper_mean",
                "paper_std", "paper_pooled_std", "paper_df", "ours_variant", "ours_label", "ours_mean", "ours_std",
                "ours_n_seeds", "ours_missing_seeds", "ours_n_examples", "ours_ci_low", "ours_ci_high", "interval_on",
                "diff", "diff_low", "diff_high", "reproduction", "reproduction_detail", "p_differs", "p_differs_holm",
                "min_detectable", "status",
                *STANDARD_AA_COLUMNS]]


def aa_protocol(table: pd.DataFrame) -> str:
    """Our attack set against the paper's AA column: the release's own protocol (``aa_release``) where the grid
    evaluates it, else standard AutoAttack — a stronger attack, so that gap is no reproduction test."""
    return "aa_release" if "aa_release" in set(table["attack"]) else "aa"


STANDARD_AA_COLUMNS = ["standard_aa_mean", "standard_aa_std", "standard_aa_n_seeds", "standard_aa_missing_seeds",
                       "standard_aa_ci_low", "standard_aa_ci_high"]


def _beside_standard_aa(out: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Our standard-AA cell beside each AA row compared under the release's protocol (empty elsewhere), so the
    comparison shows both protocols' numbers for the same models."""
    cols = [c.removeprefix("standard_aa_") for c in STANDARD_AA_COLUMNS]
    standard = (table.loc[table["attack"] == "aa", ["dataset", "variant", *cols]]
                .rename(columns={"variant": "ours_variant"} | {c: f"standard_aa_{c}" for c in cols})
                .assign(ours_attack="aa_release"))
    out = out.merge(standard, on=["dataset", "ours_variant", "ours_attack"], how="left")
    out["standard_aa_n_seeds"] = out["standard_aa_n_seeds"].astype("Int64")
    return out


def _protocol_differs(attack: str) -> tuple[str, str]:
    """The verdict of an AA cell measured with standard AutoAttack against the paper's weaker protocol."""
    return "protocols differ", (f"ours is {attack}, {PROTOCOLS[attack]}: a lower number is expected; evaluate "
                                "aa_release to compare")


def _pooled_paper(paper: pd.DataFrame, runs: int) -> pd.DataFrame:
    """The paper's cells with ``paper_pooled_std`` and ``paper_df``: each column's (dataset, arch, attack) stds,
    none below :data:`PRINTED_STD_FLOOR`, pooled where Bartlett's test finds them homogeneous, each row's own
    otherwise (``part.analysis.stats.pool_stds``)."""
    frames = []
    for _, column in paper.groupby(["dataset", "arch", "attack"], sort=False):
        pooled, df = stats.pool_stds(np.maximum(column["paper_std"].to_numpy(), PRINTED_STD_FLOOR), runs)
        frames.append(column.assign(paper_pooled_std=pooled, paper_df=df))
    return pd.concat(frames).sort_index()


def reproduction(est: stats.Versus, settings: Settings, test_size: int | None, attack: str) -> tuple[str, str]:
    """(verdict, detail) of ours − paper at ``settings.tolerance``: *reproduced* when its interval lies within
    ± tolerance (two one-sided tests, Schuirmann 1987), *differs* when it lies wholly beyond, else
    *inconclusive* with what would decide it at 80 % power (``attack``: the column's name, for the advice)."""
    if not est.seeds_known:
        return "inconclusive", "one seed: seed-to-seed variation unknown (run ≥ 2 seeds)"
    tolerance = settings.tolerance
    low, high = stats.interval(est, settings.confidence)
    if -tolerance <= low and high <= tolerance:
        return "reproduced", ""
    if low > tolerance or high < -tolerance:
        return "differs", f"beyond ± {tolerance:g}"
    gap = tolerance - abs(est.mean)
    goal = f"within ± {tolerance:g}" if gap > 0 else f"beyond ± {tolerance:g}"
    return "inconclusive", f"to show it {goal}: {_more_data(est, gap, attack, settings.confidence, test_size)}"


def differs_p(est: stats.Versus | None, tolerance: float) -> float:
    """The p-value of *differs* at ``tolerance``: the smaller of the one-sided p-values of "ours − paper is at most
    +tolerance" and "at least −tolerance" (*differs* ⇔ p ≤ (1 − confidence)/2; nan from one seed or no estimate)."""
    if est is None or not est.seeds_known:
        return math.nan
    return min(stats.p_above(est, tolerance), 1 - stats.p_above(est, -tolerance))


def _more_data(est: stats.Crossed | stats.Versus, gap: float, attack: str, confidence: float,
               test_size: int | None) -> str:
    """What would decide a question whose answer lies ``gap`` away from the estimate, with 80 % power if the
    observed difference and spread are the true ones: more seeds, or more test examples (never more than the
    test set has, ``test_size``; none when the estimate already covers it)."""
    if abs(gap) < 1e-9:
        return "the difference sits on the threshold: more data at the observed difference cannot decide"
    seeds = stats.to_decide(est, gap, "n_seeds", confidence)
    examples = stats.to_decide(est, gap, "n_examples", confidence, limit=test_size)
    ways = ([f"≈ {seeds - est.n_seeds} more seed{'s' if seeds - est.n_seeds > 1 else ''}"] if seeds else []) + (
        [f"≈ {examples} {attack} examples (now {est.n_examples})"] if examples else [])
    if ways:
        return " or ".join(ways) + f", for {_percent(stats.POWER)} power if the observed difference and spread hold"
    return "not within 1000 seeds" + (" or the test set" if test_size else "") + " at the observed spread"


def difference_verdict(est: stats.Crossed | None, confidence: float, what: str) -> tuple[str, str]:
    """(verdict, detail) of one paired PART − base difference: *higher* / *lower* when its interval lies
    wholly above / below 0, else *inconclusive* with what would decide it (``what`` names the measurement, for
    the advice); *no pair* without an estimate. From one seed the seed-to-seed variation is unknown and the
    verdict is *inconclusive*, as everywhere in the tables; the detail then says what the interval of the test
    sample alone (these two trained models) shows."""
    if est is None:
        return "no pair", ""
    if not est.seeds_known:
        h = float(stats.half_width(est, confidence))
        sign = "higher" if est.mean - h > 0 else "lower" if est.mean + h < 0 else "no difference"
        return "inconclusive", (f"one seed: seed-to-seed variation unknown (run ≥ 2 seeds); on these two models the "
                                f"test sample alone shows {sign}")
    low, high = stats.interval(est, confidence)
    if low > 0 or high < 0:
        return ("higher" if low > 0 else "lower"), ""
    return "inconclusive", _more_data(est, est.mean, what, confidence, None)


def _on_test_set(est: object, size: int | None) -> stats.Crossed | None:
    """Our cell's estimate (None where there is none), on the test set when its size is known."""
    if not isinstance(est, stats.Crossed):
        return None
    return stats.on_test_set(est, size) if size is not None else est


def _status(variant: object, n_seeds: float) -> str:
    if pd.isna(variant):
        return "no such variant in this grid"
    if pd.isna(n_seeds):
        return "attack not evaluated"
    return "compared" if n_seeds > 0 else "no results yet"


def _dataset_list(paper: pd.DataFrame) -> str:
    pairs = paper.drop_duplicates(["dataset", "arch"])
    return ", ".join(dataset_name(d, a) for d, a in zip(pairs["dataset"], pairs["arch"]))


def versus_markdown(versus: pd.DataFrame, table: pd.DataFrame, paper: pd.DataFrame, budget: str,
                    settings: Settings) -> str:
    """The comparison as Markdown; says plainly when no cell of the paper matches this grid.

    ``budget`` is the grid's evaluation budget in words (``part.analysis.aggregate.budget``).
    """
    head = "# The paper's main table vs this reproduction\n\n"
    protocols = _protocols_note(table)
    if versus.empty:
        return (head + f"No cell of the paper matches this grid: the paper reports {_dataset_list(paper)}; this grid "
                f"has {_dataset_list(table)}. Only the same dataset trained with the same architecture is compared."
                f"\n\n{protocols}\n\n{budget}\n")
    level, tolerance = _percent(settings.confidence), f"{settings.tolerance:g}"
    shown = pd.DataFrame({
        "Dataset": [dataset_name(d, a) for d, a in zip(versus["dataset"], versus["arch"])],
        "Paper row": versus["paper_method"], "Attack (ours)": versus["ours_attack"].map(COLUMNS),
        "Paper": [f"{m:.2f} ± {s:.2f}" for m, s in zip(versus["paper_mean"], versus["paper_std"])],
        "Ours": [_ours(r) for r in versus.itertuples()], "Our row": versus["ours_label"].fillna(""),
        f"Ours − paper ({level} interval)": [format_interval(d, lo, hi) if pd.notna(d) else "" for d, lo, hi in
                                             zip(versus["diff"], versus["diff_low"], versus["diff_high"])],
        f"Within ± {tolerance}?": [f"{v} ({d})" if d else v for v, d in
                                   zip(versus["reproduction"], versus["reproduction_detail"])],
        "Detectable": ["" if math.isnan(m) else f"{m:.2f}" for m in versus["min_detectable"]],
    })
    if versus["standard_aa_mean"].notna().any():
        shown["Ours, standard AA"] = [_standard_aa(r) for r in versus.itertuples()]
    judged = versus.loc[versus["reproduction"] != "", "reproduction"]
    shown_verdicts = ("reproduced", "differs", "inconclusive") + (
        ("protocols differ",) if (judged == "protocols differ").any() else ())
    counts = ", ".join(f"{int((judged == v).sum())} {v}" for v in shown_verdicts)
    compared_sets = versus.set_index(["dataset", "arch"]).index
    not_here = paper[~paper.set_index(["dataset", "arch"]).index.isin(compared_sets)]
    not_there = table[~table.set_index(["dataset", "arch"]).index.isin(compared_sets)]
    pooled = versus["paper_df"] > settings.paper_runs - 1
    note = (f"\n\n{protocols}\n\n{budget}\n\nOf {len(judged)} compared cells: {counts} (tolerance ± {tolerance} points, "
            f"`statistics.reproduction_tolerance`). *Ours − paper*: the difference of means with its {level} interval, "
            "which holds our seed-to-seed noise (on this test set where we evaluated all of it, as the paper did; "
            "an evaluated subset adds its share of the test sample) and the paper's own, its std over "
            f"{settings.paper_runs} assumed runs (`statistics.paper_runs`; pooled over the paper's column where its stds "
            f"are homogeneous — {int(pooled.sum())} of {len(versus)} cells). *Reproduced*: the interval lies within "
            f"± {tolerance} (two one-sided tests; wrongly said of a true gap beyond ± {tolerance} at most "
            f"{_percent((1 - settings.confidence) / 2)} of the time); *differs*: it lies wholly beyond ± {tolerance} "
            f"(as rare when the truth is within); otherwise *inconclusive*, with what would decide it. *Detectable*: "
            f"the gap to the paper a design like ours finds with {_percent(stats.POWER)} power if the observed "
            "spreads are the true ones. Ours: mean ± sample std (ddof = 1) over seeds, † = fewer seeds than the "
            "grid's; the paper's: mean ± std as printed. Rows are matched by dataset, architecture, base method, PART "
            "or not and s (from the run configs). Method: docs/statistics.md.")
    if not not_here.empty:
        note += f" Not in this grid: {_dataset_list(not_here)}."
    if not not_there.empty:
        note += f" Not in the paper: {_dataset_list(not_there)}."
    names = [f"{dataset_name(d, a)} {m}, {COLUMNS[c]}" for d, a, m, c in
             zip(versus["dataset"], versus["arch"], versus["paper_method"], versus["ours_attack"])]
    reading = _holm_line(names, versus["p_differs"], versus["p_differs_holm"], (1 - settings.confidence) / 2, "",
                         "judged cells", f"ours differs from the paper beyond ± {tolerance} in",
                         "Table-wide: no cell with a verdict to read.")
    return head + shown.to_markdown(index=False, disable_numparse=True) + note + f"\n\n{reading}\n"


def _protocols_note(table: pd.DataFrame) -> str:
    """Which AutoAttack each AA number is: the paper's, ours compared with it, and ours beside it."""
    evaluated = [a for a in PROTOCOLS if a in set(table["attack"])]
    ours = aa_protocol(table)
    text = (f"AutoAttack protocols: the paper's AA column is {PROTOCOLS['aa_release'].rsplit(':', 1)[0]} "
            "(torchattacks' `AutoAttack(model, norm='Linf', eps=ε, version='standard')` as the authors' release calls "
            f"it). This grid evaluates {', '.join(f'`{a}` ({PROTOCOLS[a]})' for a in evaluated) or 'no AutoAttack'}")
    if ours == "aa_release":
        return text + ("; the paper's AA is compared with `aa_release`, and our standard AA is shown beside it "
                       "(*Ours, standard AA*) for the same models.")
    return text + ("; with no `aa_release` the paper's AA cells are not judged (*protocols differ*): standard AA is "
                   "stronger, so a lower number is expected by construction. Add `aa_release` to "
                   "`evaluation.attacks` to compare them.")


def _standard_aa(r: object) -> str:
    if pd.isna(r.standard_aa_mean):
        return ""
    return format_cell(r.standard_aa_mean, r.standard_aa_std, int(r.standard_aa_n_seeds), r.standard_aa_missing_seeds,
                       math.nan, False, MARKDOWN)


def _ours(r: object) -> str:
    if r.status != "compared":
        return r.status
    return format_cell(r.ours_mean, r.ours_std, int(r.ours_n_seeds), r.ours_missing_seeds, math.nan, False, MARKDOWN)


def _percent(level: float) -> str:
    return f"{100 * level:g} %"


# ---------------------------------------------------------------------------------------------
# The claim


def judge(estimates: dict[str, stats.Estimate | None], confidence: float,
          advice: Callable[[Criterion, Any, float], str], claim: Claim = Claim()) -> tuple[str, str]:
    """(verdict, detail) of the claim from the interval of each criterion's Δ (by attack).

    *holds* if every criterion passes; *does not hold* if one fails (detail: which); else
    *inconclusive*, the detail saying for each open criterion what ``advice`` says would settle it.
    An estimate from one seed leaves the seed-to-seed variation unknown: inconclusive whatever it says.
    """
    criteria = claim.criteria
    missing = [c.name for c in criteria if estimates.get(c.attack) is None]
    if missing:
        return "not measured", f"no {' or '.join(missing)}"
    one_seed = [c.name for c in criteria if not estimates[c.attack].seeds_known]
    if one_seed:
        return "inconclusive", "one seed: seed-to-seed variation unknown (run ≥ 2 seeds)"
    status = {c: c.status(*stats.interval(estimates[c.attack], confidence)) for c in criteria}
    failed = [c.failure() for c, s in status.items() if s == "fail"]
    if failed:
        return "does not hold", ", ".join(failed)
    open_ = [c for c, s in status.items() if s == "open"]
    if not open_:
        return "holds", ""
    return "inconclusive", "; ".join(f"{c.name}: {advice(c, estimates[c.attack], confidence)}" for c in open_)


def _our_advice(test_size: int | None) -> Callable[[Criterion, Any, float], str]:
    """What would settle an open criterion of ours: more seeds (both rows), or more test examples for
    its attack, never more than the test set's ``test_size``."""
    def advice(c: Criterion, est: stats.Crossed, confidence: float) -> str:
        return _more_data(est, est.mean - c.threshold, COLUMNS[c.attack], confidence, test_size)
    return advice


def _paper_advice(c: Criterion, est: stats.Welch, confidence: float) -> str:
    gap = est.mean - c.threshold
    runs = stats.to_decide(est, gap, "n_runs", confidence) if abs(gap) >= 1e-9 else None
    return (f"≈ {runs} runs a setting (assumed {est.n_runs}; {_percent(stats.POWER)} power at the printed "
            "difference and stds)" if runs else "not within 1000 runs at the printed stds")


def _pooled_df(df: float, runs: int) -> float | None:
    """A column's degrees of freedom where its stds were pooled (one estimate behind both rows), else None."""
    return df if df > runs - 1 else None


def holds_p(estimates: dict[str, stats.Estimate | None], claim: Claim = Claim()) -> float:
    """The p-value of the claim's intersection-union test: the larger of its criteria's one-sided p-values
    (nan where a criterion is unmeasured or from one seed). *holds* ⇔ p ≤ (1 − confidence)/2."""
    if any(estimates.get(c.attack) is None or not estimates[c.attack].seeds_known for c in claim.criteria):
        return math.nan
    return max(stats.p_above(estimates[c.attack], c.threshold) for c in claim.criteria)


VERDICT_COLUMNS = ["dataset", "arch", "family", "base_variant", "variant", "label", "s",
                   *(f"{a}_{k}" for a in ("natural", "aa") for k in ("diff", "low", "high", "n_examples", "seed_df")),
                   "n_seeds", "complete", "verdict", "detail", "p_holds", "p_holds_holm",
                   *(f"paper_{a}_{k}" for a in ("natural", "aa") for k in ("diff", "low", "high")),
                   "paper_runs", "paper_verdict", "paper_detail", "paper_p_holds", "paper_p_holds_holm", "confidence",
                   "aa_tolerance"]


def claim_verdicts(table: pd.DataFrame, paper: pd.DataFrame, settings: Settings,
                   test_sizes: dict[str, int | None]) -> pd.DataFrame:
    """Per PART variant of the grid (dataset, family, s): the claim on our intervals and on the paper's.

    Ours: Δ natural and Δ AA with their intervals, paired by seed and test example (``diff_estimate`` of
    ``table``), the paired seeds and the test examples behind each. The paper's: the Welch interval of its
    difference, assuming ``settings.paper_runs`` runs a row, with its stds pooled over each column where they
    are homogeneous. ``test_sizes`` gives, per dataset, the size of its test set (caps the advice). ``p_holds``
    is each row's p-value for *holds* and ``p_holds_holm`` it Holm-adjusted over the rows of the table (the
    family-wise reading of many rows).
    """
    confidence, claim = settings.confidence, settings.claim
    criteria = claim.criteria
    cells = table.set_index(["dataset", "variant", "attack"])
    paper = _pooled_paper(paper, settings.paper_runs)
    rows = []
    for v in _variants(table).itertuples():
        if not v.part:
            continue
        ours = {c.attack: cells["diff_estimate"].get((v.dataset, v.variant, c.attack)) for c in criteria}
        ours = {a: None if e is None or pd.isna(e) else e for a, e in ours.items()}
        verdict, detail = _our_verdict(v, cells, ours, settings, test_sizes.get(v.dataset))
        paper_est, paper_verdict, paper_detail = _paper_claim(paper, v, settings)
        row = {"dataset": v.dataset, "arch": v.arch, "family": v.family, "base_variant": v.base_variant,
               "variant": v.variant, "label": v.label, "s": v.s}
        for c in criteria:
            row |= _interval_columns(c.attack, ours[c.attack], confidence)
        involved = cells.loc[[(v.dataset, name, a) for name in (v.variant, v.base_variant) if pd.notna(name)
                              for a in ("natural", "aa") if (v.dataset, name, a) in cells.index]]
        row |= {"n_seeds": min((ours[c.attack].n_seeds for c in criteria if ours[c.attack] is not None), default=0),
                "complete": bool((involved["missing_seeds"] == "").all()), "verdict": verdict, "detail": detail,
                "p_holds": holds_p(ours, claim) if verdict != "not measured" else math.nan}
        for c in criteria:
            row |= _interval_columns(f"paper_{c.attack}", paper_est.get(c.attack), confidence)
        rows.append(row | {"paper_runs": settings.paper_runs, "paper_verdict": paper_verdict,
                           "paper_detail": paper_detail, "paper_p_holds": holds_p(paper_est, claim),
                           "confidence": confidence, "aa_tolerance": claim.aa_tolerance})
    frame = pd.DataFrame(rows, columns=VERDICT_COLUMNS)
    for prefix in ("", "paper_"):
        frame[f"{prefix}p_holds_holm"] = stats.holm(frame[f"{prefix}p_holds"].astype(float))
    return frame


def _interval_columns(prefix: str, est: stats.Estimate | None, confidence: float) -> dict[str, float]:
    """``{prefix}_diff``, ``_low``, ``_high`` of one difference, and for ours the test examples and the seed
    piece's degrees of freedom (more than seeds − 1 where the column's rows were pooled)."""
    low, high = stats.interval(est, confidence) if est is not None else (math.nan, math.nan)
    out = {f"{prefix}_diff": est.mean if est is not None else math.nan, f"{prefix}_low": low, f"{prefix}_high": high}
    if not prefix.startswith("paper_"):
        out[f"{prefix}_n_examples"] = est.n_examples if est is not None else pd.NA
        out[f"{prefix}_seed_df"] = est.seed_df if est is not None and est.seeds_known else math.nan
    return out


def _our_verdict(v: object, cells: pd.DataFrame, ours: dict[str, stats.Crossed | None], settings: Settings,
                 test_size: int | None) -> tuple[str, str]:
    if pd.isna(v.base_variant):
        return "not measured", "no base method in the family"
    if (v.dataset, v.variant, "aa") not in cells.index:
        return "not measured", "no AA"
    waiting = [cells.loc[(v.dataset, name, "natural"), "label"] for name in (v.variant, v.base_variant)
               if cells.loc[(v.dataset, name, "natural"), "n_seeds"] == 0]
    if waiting:
        return "not measured", f"no results yet: {', '.join(waiting)}"
    return judge(ours, settings.confidence, _our_advice(test_size), settings.claim)


def _paper_claim(paper: pd.DataFrame, v: object, settings: Settings) -> tuple[dict[str, stats.Welch], str, str]:
    """(Welch estimate by attack, verdict, detail) of the paper's row matching variant ``v``."""
    same = paper[(paper["dataset"] == v.dataset) & (paper["arch"] == v.arch) & (paper["base_method"] == v.base_method)]
    if same.empty:
        return {}, "not in the paper", ""
    part, base = same[same["s_key"] == v.s_key], same[~same["part"]]
    if part.empty or base.empty:
        return {}, "not in the paper", f"no {'base' if base.empty else f's = {v.s}'} row"
    part, base = (rows.set_index("attack") for rows in (part, base))
    runs = settings.paper_runs
    est = {c.attack: stats.Welch(part.loc[c.attack, "paper_mean"] - base.loc[c.attack, "paper_mean"],
                                 part.loc[c.attack, "paper_pooled_std"], base.loc[c.attack, "paper_pooled_std"],
                                 runs, _pooled_df(part.loc[c.attack, "paper_df"], runs))
           for c in settings.claim.criteria}
    return (est, *judge(est, settings.confidence, _paper_advice, settings.claim))


def claim_sensitivity(table: pd.DataFrame, paper: pd.DataFrame, settings: Settings,
                      test_sizes: dict[str, int | None]) -> dict[float, pd.DataFrame]:
    """The claim's verdicts (:func:`claim_verdicts`) at each tolerance of :data:`SENSITIVITY` other than the
    configured one, so a reader sees whether a conclusion hangs on that choice."""
    return {t: claim_verdicts(table, paper, dataclasses.replace(settings, claim=Claim(t)), test_sizes)
            for t in SENSITIVITY if t != settings.claim.aa_tolerance}


def verdicts_markdown(verdicts: pd.DataFrame, budget: str, settings: Settings,
                      sensitivity: dict[float, pd.DataFrame] | None = None) -> str:
    """The claim, family by family, for our numbers and the paper's, with intervals, the budget and the
    verdicts at the other tolerances of ``sensitivity`` (:func:`claim_sensitivity`)."""
    confidence, claim = settings.confidence, settings.claim
    head = (f"# The paper's claim, as this pipeline reads it: {claim.sentence()}\n\n"
            "The paper reports \"a notable improvement in accuracy without compromising robustness\" (abstract) "
            f"without quantifying it; read here as Δ natural > 0 and Δ AA ≥ −{claim.aa_tolerance:g} points "
            "(`statistics.claim.aa_tolerance`; why 0.5 by default: docs/statistics.md). Ours: Δ AA under standard "
            "AutoAttack; the paper's: under its own (torchattacks) AutoAttack.\n\n")
    if verdicts.empty:
        return head + "This grid has no PART variant: nothing to judge.\n"
    level = _percent(confidence)
    shown = pd.DataFrame({
        "Dataset": [dataset_name(d, a) for d, a in zip(verdicts["dataset"], verdicts["arch"])],
        "Family": verdicts["family"], "PART row": verdicts["label"],
        **{f"Ours: {c.name}": _intervals(verdicts, c.attack) for c in claim.criteria},
        "Ours": [_verdict_text(v, d, c) for v, d, c in zip(verdicts["verdict"], verdicts["detail"],
                                                            verdicts["complete"])],
        **{f"Paper: {c.name}": _intervals(verdicts, f"paper_{c.attack}") for c in claim.criteria},
        "Paper": [_verdict_text(v, d, True) for v, d in zip(verdicts["paper_verdict"], verdicts["paper_detail"])]})
    runs = int(verdicts["paper_runs"].iloc[0])
    alpha = (1 - confidence) / 2
    note = (f"\n\n{budget}\n\nΔ = PART row − its family's base method (accuracy points) with its {level} confidence "
            "interval. Ours: paired by seed (same initialisation and data order) and by test example, covering "
            "seed-to-seed and test-sample noise, the seed-level spread pooled over the column's rows where "
            "homogeneous; the paper's: Welch intervals from its means and stds (pooled likewise), assuming "
            f"{runs} runs a row (seed noise only). The claim *holds* when the interval of Δ natural lies above 0 "
            f"and that of Δ AA at or above −{claim.aa_tolerance:g} (an intersection-union test: said of a false claim "
            f"at most {_percent(alpha)} of the time); it *does not hold* when one interval lies wholly on the wrong side "
            f"(said of a true claim at most {_percent(2 * alpha)} of the time); otherwise it is *inconclusive*, with "
            f"what would settle it at {_percent(stats.POWER)} power if the observed difference and spread are the true "
            "ones. † = computed from fewer seeds than the grid's (see the main table). Method: docs/statistics.md.\n"
            f"\n{_table_reading(verdicts, '', 'ours', alpha)}\n{_table_reading(verdicts, 'paper_', 'the paper', alpha)}\n")
    if sensitivity:
        note += "\n" + _sensitivity_line(claim.aa_tolerance, sensitivity) + "\n"
    return head + shown.to_markdown(index=False, disable_numparse=True) + note


VERDICTS = ("holds", "inconclusive", "does not hold", "not measured", "not in the paper")


def _sensitivity_line(tolerance: float, sensitivity: dict[float, pd.DataFrame]) -> str:
    """How many rows reach each verdict at the other tolerances, ours and the paper's."""
    def counts(column: pd.Series) -> str:
        return ", ".join(f"{int((column == v).sum())} {v}" for v in VERDICTS if (column == v).any()) or "no row"

    at = "; ".join(f"at {t:g} point{'s' if t != 1 else ''}: ours {counts(frame['verdict'])}, the paper's "
                   f"{counts(frame['paper_verdict'])}" for t, frame in sorted(sensitivity.items()))
    return f"Sensitivity to the AA tolerance (here {tolerance:g}): {at}."


def _table_reading(verdicts: pd.DataFrame, prefix: str, whose: str, alpha: float) -> str:
    """One line reading all rows at once: the rows whose claim holds after Holm's adjustment over the table,
    so that many rows are not read as many independent wins."""
    names = [f"{dataset_name(d, a)} {label}" for d, a, label in
             zip(verdicts["dataset"], verdicts["arch"], verdicts["label"])]
    return _holm_line(names, verdicts[f"{prefix}p_holds"], verdicts[f"{prefix}p_holds_holm"], alpha,
                      f"{whose}, ", "rows", "the claim holds in", f"Table-wide ({whose}): no row with a verdict to read.")


def _holm_line(names: list[str], p: pd.Series, p_holm: pd.Series, alpha: float, whose: str, units: str, said: str,
               empty: str) -> str:
    """"Table-wide (whose Holm over n units, family-wise error ≤ alpha): ``said`` k of n: the names." — over the
    entries with a p-value, naming those whose Holm-adjusted p is ≤ alpha; ``empty`` where none has one."""
    judged = p.notna().to_numpy()
    if not judged.any():
        return empty
    n = int(judged.sum())
    chosen = [name for name, j, q in zip(names, judged, p_holm) if j and q <= alpha]
    return (f"Table-wide ({whose}Holm over {n} {units}, family-wise error ≤ {_percent(alpha)}): {said} {len(chosen)} "
            f"of {n}" + (f": {'; '.join(chosen)}." if chosen else "."))


def _intervals(verdicts: pd.DataFrame, prefix: str) -> list[str]:
    return [format_interval(d, lo, hi) for d, lo, hi in
            zip(verdicts[f"{prefix}_diff"], verdicts[f"{prefix}_low"], verdicts[f"{prefix}_high"])]


def _verdict_text(verdict: str, detail: str, complete: bool) -> str:
    text = f"{verdict} ({detail})" if detail else verdict
    return text if complete else f"{text} †"
