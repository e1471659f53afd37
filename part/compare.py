"""The paper's numbers beside ours: cell by cell, and its claim family by family.

Rows of the paper are matched to the grid's variants by what was run, never by label: (dataset,
architecture, base method, PART or not, s = ``mask.refresh_every``), each read from the variant's run
config (``part.aggregate.variant_table``). Only a dataset trained with the paper's architecture is
compared; a grid of other data (the digits demo) gets a comparison that says no cell matches.

The claim checked is the paper's headline: *PART raises natural accuracy without lowering AA by more
than 0.5 points* (against the family's base method). It is judged on confidence intervals, three
ways: *holds* when the interval of Δ natural lies above 0 and that of Δ AA at or above −0.5, *does not
hold* when an interval lies wholly on the wrong side, *inconclusive* otherwise — with what would
settle it. Ours come from the per-example flags (``part.stats``, paired by seed and example), the
paper's from its means and stds over its runs (Welch). Both intervals and the rule: docs/statistics.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from part import stats
from part.tablefmt import COLUMNS, MARKDOWN, dataset_name, format_cell, format_interval, signed

AA_TOLERANCE = 0.5
"""Points of AA accuracy the claim allows PART to lose against its base method."""
PAPER_RUNS = 3
"""Runs behind each of the paper's mean ± std (not stated in the paper; the workflow's ``statistics.paper_runs``)."""
MATCH_KEYS = ["dataset", "arch", "base_method", "part", "s_key"]


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


def paper_vs_reproduction(table: pd.DataFrame, paper: pd.DataFrame, confidence: float,
                          test_sets: dict[str, int | None]) -> pd.DataFrame:
    """Every cell the paper reports for a (dataset, arch) of this grid, beside ours.

    ``table`` is the main table's cells (``part.aggregate.cells``). Per cell: the paper's mean and std,
    ours (mean, sample std, n_seeds, missing seeds, the ``confidence`` interval and the test examples it
    rests on), the difference ours − paper, whether the paper's mean lies inside our interval, the
    minimum difference our design would detect (``part.stats.min_detectable``), the combined std
    √(std_paper² + std_ours²) and whether |diff| ≤ it (empty below 2 seeds), and a status: compared /
    no such variant in this grid / attack not evaluated / no results yet.

    The paper evaluated the whole test set; where ours did too (``test_sets`` gives the dataset's test-set
    size), the interval is that of the accuracy on this test set (``part.stats.on_test_set``): the luck
    of the test sample is common to both and only seeds and an evaluated subset's share remain. Where the
    size is unknown (None), the interval is the wider one on the data distribution.
    """
    variants = _variants(table)
    grid = set(zip(variants["dataset"], variants["arch"]))
    ours = paper[[(d, a) in grid for d, a in zip(paper["dataset"], paper["arch"])]]
    matched = ours.merge(variants[[*MATCH_KEYS, "variant", "label"]], on=MATCH_KEYS, how="left")
    stats_cols = ["mean", "std", "n_seeds", "missing_seeds", "n_examples", "estimate"]
    out = matched.merge(table[["dataset", "arch", "variant", "attack", *stats_cols]],
                        on=["dataset", "arch", "variant", "attack"], how="left")
    out = out.rename(columns={c: f"ours_{c}" for c in stats_cols} | {"label": "ours_label", "variant": "ours_variant"})
    out["ours_n_seeds"] = out["ours_n_seeds"].astype("Int64")
    out["ours_estimate"] = [_on_test_set(e, test_sets.get(d)) for e, d in zip(out["ours_estimate"], out["dataset"])]
    bounds = [stats.interval(e, confidence) if e is not None else (math.nan, math.nan) for e in out["ours_estimate"]]
    out["ours_ci_low"], out["ours_ci_high"] = [b[0] for b in bounds], [b[1] for b in bounds]
    out["interval_on"] = ["" if e is None else ("this test set" if e.population else "the data distribution")
                          for e in out["ours_estimate"]]
    out["diff"] = out["ours_mean"] - out["paper_mean"]
    inside = (out["ours_ci_low"] <= out["paper_mean"]) & (out["paper_mean"] <= out["ours_ci_high"])
    out["paper_in_interval"] = inside.astype("boolean").mask(out["ours_ci_low"].isna())
    out["seeds_known"] = [pd.NA if e is None else e.seeds_known for e in out["ours_estimate"]]
    out["min_detectable"] = [np.nan if e is None else stats.min_detectable(e, confidence) for e in out["ours_estimate"]]
    out["combined_std"] = np.sqrt(out["paper_std"] ** 2 + out["ours_std"] ** 2)
    within = (out["diff"].abs() <= out["combined_std"] + 1e-9).astype("boolean")
    out["within_combined_std"] = within.mask(out["ours_n_seeds"].fillna(0) < 2)
    out["status"] = [_status(v, n) for v, n in zip(out["ours_variant"], out["ours_n_seeds"])]
    return out[["dataset", "arch", "paper_method", "base_method", "s", "attack", "paper_mean", "paper_std",
                "ours_variant", "ours_label", "ours_mean", "ours_std", "ours_n_seeds", "ours_missing_seeds",
                "ours_n_examples", "ours_ci_low", "ours_ci_high", "interval_on", "diff", "paper_in_interval",
                "seeds_known",
                "min_detectable", "combined_std", "within_combined_std", "status"]]


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
                    confidence: float) -> str:
    """The comparison as Markdown; says plainly when no cell of the paper matches this grid.

    ``budget`` is the grid's evaluation budget in words (``part.aggregate.budget``).
    """
    head = "# The paper's main table vs this reproduction\n\n"
    if versus.empty:
        return (head + f"No cell of the paper matches this grid: the paper reports {_dataset_list(paper)}; this grid "
                f"has {_dataset_list(table)}. Only the same dataset trained with the same architecture is compared."
                f"\n\n{budget}\n")
    level = _percent(confidence)
    shown = pd.DataFrame({
        "Dataset": [dataset_name(d, a) for d, a in zip(versus["dataset"], versus["arch"])],
        "Paper row": versus["paper_method"], "Attack": versus["attack"].map(COLUMNS),
        "Paper": [f"{m:.2f} ± {s:.2f}" for m, s in zip(versus["paper_mean"], versus["paper_std"])],
        "Ours": [_ours(r) for r in versus.itertuples()], "Our row": versus["ours_label"].fillna(""),
        f"Ours: {level} interval": [_range(lo, hi) for lo, hi in zip(versus["ours_ci_low"], versus["ours_ci_high"])],
        "Ours − paper": ["" if math.isnan(d) else signed(d) for d in versus["diff"]],
        "Paper inside": [_inside(r) for r in versus.itertuples()],
        "Detectable": ["" if math.isnan(m) else f"{m:.2f}" for m in versus["min_detectable"]],
        "Within combined std": [_within(w, n) for w, n in zip(versus["within_combined_std"], versus["ours_n_seeds"])],
    })
    inside = versus["paper_in_interval"].dropna()
    compared = versus["within_combined_std"].dropna()
    compared_sets = versus.set_index(["dataset", "arch"]).index
    not_here = paper[~paper.set_index(["dataset", "arch"]).index.isin(compared_sets)]
    not_there = table[~table.set_index(["dataset", "arch"]).index.isin(compared_sets)]
    note = (f"\n\n{budget}\n\n{int(inside.sum())} of {len(inside)} compared cells have the paper's mean inside our "
            f"{level} interval (on this test set where we evaluated all of it, as the paper did: seed-to-seed noise "
            "and an evaluated subset's share of the test sample; docs/statistics.md); one seed gives no interval. "
            "*Detectable*: the smallest true difference from the paper's mean our design would detect at "
            f"{level} with {_percent(stats.POWER)} power. "
            f"{int(compared.sum())} of {len(compared)} cells with ≥ 2 seeds differ from the paper by at most the "
            "combined std √(std_paper² + std_ours²). Ours: mean ± sample std (ddof = 1) over seeds, † = fewer seeds "
            "than the grid's; the paper's: mean ± std as printed. Rows are matched by dataset, architecture, base "
            "method, PART or not and s (from the run configs).")
    if not not_here.empty:
        note += f" Not in this grid: {_dataset_list(not_here)}."
    if not not_there.empty:
        note += f" Not in the paper: {_dataset_list(not_there)}."
    return head + shown.to_markdown(index=False, disable_numparse=True) + note + "\n"


def _ours(r: object) -> str:
    if r.status != "compared":
        return r.status
    return format_cell(r.ours_mean, r.ours_std, int(r.ours_n_seeds), r.ours_missing_seeds, math.nan, False, MARKDOWN)


def _range(low: float, high: float) -> str:
    return "" if math.isnan(low) else f"[{low:.2f}, {high:.2f}]"


def _inside(r: object) -> str:
    if pd.isna(r.paper_in_interval):
        return "n/a (1 seed)" if r.seeds_known is False else ""
    return "yes" if r.paper_in_interval else "no"


def _within(within: object, n_seeds: float) -> str:
    if pd.isna(within):
        return "n/a (1 seed)" if pd.notna(n_seeds) and n_seeds == 1 else ""
    return "yes" if within else "no"


def _percent(level: float) -> str:
    return f"{100 * level:g} %"


# ---------------------------------------------------------------------------------------------
# The claim


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


CLAIM = (Criterion("Δ natural", "natural", 0.0, False), Criterion("Δ AA", "aa", -AA_TOLERANCE, True))
"""The claim: natural accuracy rose, and AA fell by at most the tolerance."""


def judge(estimates: dict[str, stats.Estimate | None], confidence: float,
          advice: Callable[[Criterion, Any, float], str]) -> tuple[str, str]:
    """(verdict, detail) of the claim from the interval of each criterion's Δ (by attack).

    *holds* if every criterion passes; *does not hold* if one fails (detail: which); else
    *inconclusive*, the detail saying for each open criterion what ``advice`` says would settle it.
    An estimate from one seed leaves the seed-to-seed variation unknown: inconclusive whatever it says.
    """
    missing = [c.name for c in CLAIM if estimates.get(c.attack) is None]
    if missing:
        return "not measured", f"no {' or '.join(missing)}"
    one_seed = [c.name for c in CLAIM if not estimates[c.attack].seeds_known]
    if one_seed:
        return "inconclusive", "one seed: seed-to-seed variation unknown (run ≥ 2 seeds)"
    status = {c: c.status(*stats.interval(estimates[c.attack], confidence)) for c in CLAIM}
    failed = [c.failure() for c, s in status.items() if s == "fail"]
    if failed:
        return "does not hold", ", ".join(failed)
    open_ = [c for c, s in status.items() if s == "open"]
    if not open_:
        return "holds", ""
    return "inconclusive", "; ".join(f"{c.name}: {advice(c, estimates[c.attack], confidence)}" for c in open_)


def _our_advice(test_size: int | None) -> Callable[[Criterion, Any, float], str]:
    """What would settle an open criterion of ours: more seeds (both rows), or more test examples for
    its attack (``test_size`` caps it when the natural column already sees the whole test set)."""
    def advice(c: Criterion, est: stats.Crossed, confidence: float) -> str:
        gap = est.mean - c.threshold
        if abs(gap) < 1e-9:
            return "Δ sits on the threshold: more data at the observed difference cannot decide"
        seeds = stats.to_decide(est, gap, "n_seeds", confidence)
        examples = stats.to_decide(est, gap, "n_examples", confidence)
        if examples is not None and test_size is not None and examples > test_size:
            examples = None
        ways = ([f"≈ {seeds - est.n_seeds} more seed{'s' if seeds - est.n_seeds > 1 else ''}"] if seeds else []) + (
            [f"≈ {examples} {COLUMNS[c.attack]} examples (now {est.n_examples})"] if examples else [])
        return " or ".join(ways) if ways else "not within 1000 seeds or the test set at the observed spread"
    return advice


def _paper_advice(c: Criterion, est: stats.Welch, confidence: float) -> str:
    gap = est.mean - c.threshold
    runs = stats.to_decide(est, gap, "n_runs", confidence) if abs(gap) >= 1e-9 else None
    return f"≈ {runs} runs a setting (assumed {est.n_runs})" if runs else "not within 1000 runs at the printed stds"


VERDICT_COLUMNS = ["dataset", "arch", "family", "base_variant", "variant", "label", "s",
                   *(f"{a}_{k}" for a in ("natural", "aa") for k in ("diff", "low", "high", "n_examples")),
                   "n_seeds", "complete", "verdict", "detail",
                   *(f"paper_{a}_{k}" for a in ("natural", "aa") for k in ("diff", "low", "high")),
                   "paper_runs", "paper_verdict", "paper_detail", "confidence"]


def claim_verdicts(table: pd.DataFrame, paper: pd.DataFrame, confidence: float, paper_runs: int,
                   test_sizes: dict[str, int | None]) -> pd.DataFrame:
    """Per PART variant of the grid (dataset, family, s): the claim on our intervals and on the paper's.

    Ours: Δ natural and Δ AA with their ``confidence`` intervals, paired by seed and test example
    (``diff_estimate`` of ``table``), the paired seeds and the test examples behind each. The paper's:
    the Welch interval of its difference, assuming ``paper_runs`` runs a row. ``test_sizes`` gives, per
    dataset, the size of its test set when the natural column evaluates all of it (caps the advice).
    """
    cells = table.set_index(["dataset", "variant", "attack"])
    rows = []
    for v in _variants(table).itertuples():
        if not v.part:
            continue
        ours = {c.attack: cells["diff_estimate"].get((v.dataset, v.variant, c.attack)) for c in CLAIM}
        ours = {a: None if e is None or pd.isna(e) else e for a, e in ours.items()}
        verdict, detail = _our_verdict(v, cells, ours, confidence, test_sizes.get(v.dataset))
        paper_est, paper_verdict, paper_detail = _paper_claim(paper, v, paper_runs, confidence)
        row = {"dataset": v.dataset, "arch": v.arch, "family": v.family, "base_variant": v.base_variant,
               "variant": v.variant, "label": v.label, "s": v.s}
        for c in CLAIM:
            row |= _interval_columns(c.attack, ours[c.attack], confidence)
        involved = cells.loc[[(v.dataset, name, a) for name in (v.variant, v.base_variant) if pd.notna(name)
                              for a in ("natural", "aa") if (v.dataset, name, a) in cells.index]]
        row |= {"n_seeds": min((ours[c.attack].n_seeds for c in CLAIM if ours[c.attack] is not None), default=0),
                "complete": bool((involved["missing_seeds"] == "").all()), "verdict": verdict, "detail": detail}
        for c in CLAIM:
            row |= _interval_columns(f"paper_{c.attack}", paper_est.get(c.attack), confidence)
        rows.append(row | {"paper_runs": paper_runs, "paper_verdict": paper_verdict, "paper_detail": paper_detail,
                           "confidence": confidence})
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def _interval_columns(prefix: str, est: stats.Estimate | None, confidence: float) -> dict[str, float]:
    """``{prefix}_diff``, ``_low``, ``_high`` (and ``_n_examples`` for ours) of one difference."""
    low, high = stats.interval(est, confidence) if est is not None else (math.nan, math.nan)
    out = {f"{prefix}_diff": est.mean if est is not None else math.nan, f"{prefix}_low": low, f"{prefix}_high": high}
    if not prefix.startswith("paper_"):
        out[f"{prefix}_n_examples"] = est.n_examples if est is not None else pd.NA
    return out


def _our_verdict(v: object, cells: pd.DataFrame, ours: dict[str, stats.Crossed | None], confidence: float,
                 test_size: int | None) -> tuple[str, str]:
    if pd.isna(v.base_variant):
        return "not measured", "no base method in the family"
    if (v.dataset, v.variant, "aa") not in cells.index:
        return "not measured", "no AA"
    waiting = [cells.loc[(v.dataset, name, "natural"), "label"] for name in (v.variant, v.base_variant)
               if cells.loc[(v.dataset, name, "natural"), "n_seeds"] == 0]
    if waiting:
        return "not measured", f"no results yet: {', '.join(waiting)}"
    return judge(ours, confidence, _our_advice(test_size))


def _paper_claim(paper: pd.DataFrame, v: object, runs: int,
                 confidence: float) -> tuple[dict[str, stats.Welch], str, str]:
    """(Welch estimate by attack, verdict, detail) of the paper's row matching variant ``v``."""
    same = paper[(paper["dataset"] == v.dataset) & (paper["arch"] == v.arch) & (paper["base_method"] == v.base_method)]
    if same.empty:
        return {}, "not in the paper", ""
    part, base = same[same["s_key"] == v.s_key], same[~same["part"]]
    if part.empty or base.empty:
        return {}, "not in the paper", f"no {'base' if base.empty else f's = {v.s}'} row"
    part, base = (rows.set_index("attack") for rows in (part, base))
    est = {c.attack: stats.Welch(part.loc[c.attack, "paper_mean"] - base.loc[c.attack, "paper_mean"],
                                 part.loc[c.attack, "paper_std"], base.loc[c.attack, "paper_std"], runs)
           for c in CLAIM}
    return (est, *judge(est, confidence, _paper_advice))


def verdicts_markdown(verdicts: pd.DataFrame, budget: str, confidence: float) -> str:
    """The claim, family by family, for our numbers and the paper's, with intervals and the budget."""
    head = ("# The paper's claim: PART raises natural accuracy without lowering AA by more than "
            f"{AA_TOLERANCE} points\n\n")
    if verdicts.empty:
        return head + "This grid has no PART variant: nothing to judge.\n"
    level = _percent(confidence)
    shown = pd.DataFrame({
        "Dataset": [dataset_name(d, a) for d, a in zip(verdicts["dataset"], verdicts["arch"])],
        "Family": verdicts["family"], "PART row": verdicts["label"],
        **{f"Ours: {c.name}": _intervals(verdicts, c.attack) for c in CLAIM},
        "Ours": [_verdict_text(v, d, c) for v, d, c in zip(verdicts["verdict"], verdicts["detail"],
                                                            verdicts["complete"])],
        **{f"Paper: {c.name}": _intervals(verdicts, f"paper_{c.attack}") for c in CLAIM},
        "Paper": [_verdict_text(v, d, True) for v, d in zip(verdicts["paper_verdict"], verdicts["paper_detail"])]})
    runs = int(verdicts["paper_runs"].iloc[0])
    note = (f"\n\n{budget}\n\nΔ = PART row − its family's base method (accuracy points) with its {level} confidence "
            "interval. Ours: paired by seed (same initialisation and data order) and by test example, covering "
            "seed-to-seed and test-sample noise; the paper's: Welch intervals from its means and stds, assuming "
            f"{runs} runs a row (seed noise only). The claim *holds* when the interval of Δ natural lies above 0 "
            f"and that of Δ AA at or above −{AA_TOLERANCE}; it *does not hold* when one interval lies wholly on the "
            "wrong side; otherwise it is *inconclusive*, with what would settle it at the observed spread. "
            "† = computed from fewer seeds than the grid's (see the main table). Method: docs/statistics.md.\n")
    return head + shown.to_markdown(index=False, disable_numparse=True) + note


def _intervals(verdicts: pd.DataFrame, prefix: str) -> list[str]:
    return [format_interval(d, lo, hi) for d, lo, hi in
            zip(verdicts[f"{prefix}_diff"], verdicts[f"{prefix}_low"], verdicts[f"{prefix}_high"])]


def _verdict_text(verdict: str, detail: str, complete: bool) -> str:
    text = f"{verdict} ({detail})" if detail else verdict
    return text if complete else f"{text} †"
