"""The paper's numbers beside ours: cell by cell, and its claim family by family.

Rows of the paper are matched to the grid's variants by what was run, never by label: (dataset,
architecture, base method, PART or not, s = ``mask.refresh_every``), each read from the variant's run
config (``part.aggregate.variant_table``). Only a dataset trained with the paper's architecture is
compared; a grid of other data (the digits demo) gets a comparison that says no cell matches.

The claim checked is the paper's headline: *PART raises natural accuracy without lowering AA by more
than 0.5 points* (against the family's base method), judged on the means, for our numbers and for
the paper's own.
"""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import pandas as pd

from part.tablefmt import COLUMNS, MARKDOWN, dataset_name, format_cell, signed

AA_TOLERANCE = 0.5
"""Points of AA accuracy the claim allows PART to lose against its base method."""
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


def paper_vs_reproduction(table: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Every cell the paper reports for a (dataset, arch) of this grid, beside ours.

    ``table`` is the main table's cells (``part.aggregate.cells``). Per cell: the paper's mean and std,
    ours (mean, sample std, n_seeds, missing seeds), the difference ours − paper, the combined std
    √(std_paper² + std_ours²) and whether |diff| ≤ it (empty when we have fewer than 2 seeds), and a
    status: compared / no such variant in this grid / attack not evaluated / no results yet.
    """
    variants = _variants(table)
    grid = set(zip(variants["dataset"], variants["arch"]))
    ours = paper[[(d, a) in grid for d, a in zip(paper["dataset"], paper["arch"])]]
    matched = ours.merge(variants[[*MATCH_KEYS, "variant", "label"]], on=MATCH_KEYS, how="left")
    stats = table[["dataset", "arch", "variant", "attack", "mean", "std", "n_seeds", "missing_seeds"]]
    out = matched.merge(stats, on=["dataset", "arch", "variant", "attack"], how="left")
    out = out.rename(columns={"mean": "ours_mean", "std": "ours_std", "n_seeds": "ours_n_seeds",
                              "missing_seeds": "ours_missing_seeds", "label": "ours_label", "variant": "ours_variant"})
    out["ours_n_seeds"] = out["ours_n_seeds"].astype("Int64")
    out["diff"] = out["ours_mean"] - out["paper_mean"]
    out["combined_std"] = np.sqrt(out["paper_std"] ** 2 + out["ours_std"] ** 2)
    within = (out["diff"].abs() <= out["combined_std"] + 1e-9).astype("boolean")
    out["within_combined_std"] = within.mask(out["ours_n_seeds"].fillna(0) < 2)
    out["status"] = [_status(v, n) for v, n in zip(out["ours_variant"], out["ours_n_seeds"])]
    return out[["dataset", "arch", "paper_method", "base_method", "s", "attack", "paper_mean", "paper_std",
                "ours_variant", "ours_label", "ours_mean", "ours_std", "ours_n_seeds", "ours_missing_seeds", "diff",
                "combined_std", "within_combined_std", "status"]]


def _status(variant: object, n_seeds: float) -> str:
    if pd.isna(variant):
        return "no such variant in this grid"
    if pd.isna(n_seeds):
        return "attack not evaluated"
    return "compared" if n_seeds > 0 else "no results yet"


def _dataset_list(paper: pd.DataFrame) -> str:
    pairs = paper.drop_duplicates(["dataset", "arch"])
    return ", ".join(dataset_name(d, a) for d, a in zip(pairs["dataset"], pairs["arch"]))


def versus_markdown(versus: pd.DataFrame, table: pd.DataFrame, paper: pd.DataFrame) -> str:
    """The comparison as Markdown; says plainly when no cell of the paper matches this grid."""
    head = "# The paper's main table vs this reproduction\n\n"
    if versus.empty:
        return (head + f"No cell of the paper matches this grid: the paper reports {_dataset_list(paper)}; this grid "
                f"has {_dataset_list(table)}. Only the same dataset trained with the same architecture is compared.\n")
    shown = pd.DataFrame({
        "Dataset": [dataset_name(d, a) for d, a in zip(versus["dataset"], versus["arch"])],
        "Paper row": versus["paper_method"], "Attack": versus["attack"].map(COLUMNS),
        "Paper": [f"{m:.2f} ± {s:.2f}" for m, s in zip(versus["paper_mean"], versus["paper_std"])],
        "Ours": [_ours(r) for r in versus.itertuples()], "Our row": versus["ours_label"].fillna(""),
        "Ours − paper": ["" if math.isnan(d) else signed(d) for d in versus["diff"]],
        "Within combined std": [_within(w, n) for w, n in zip(versus["within_combined_std"], versus["ours_n_seeds"])],
    })
    compared = versus["within_combined_std"].dropna()
    compared_sets = versus.set_index(["dataset", "arch"]).index
    not_here = paper[~paper.set_index(["dataset", "arch"]).index.isin(compared_sets)]
    not_there = table[~table.set_index(["dataset", "arch"]).index.isin(compared_sets)]
    note = (f"\n\n{int(compared.sum())} of {len(compared)} compared cells (with ≥ 2 seeds) differ from the paper by "
            "at most the combined std √(std_paper² + std_ours²). Ours: mean ± sample std (ddof = 1) over seeds, "
            "† = fewer seeds than the grid's; the paper's: mean ± std as printed (its number of runs is not stated). "
            "Rows are matched by dataset, architecture, base method, PART or not and s (from the run configs).")
    if not not_here.empty:
        note += f" Not in this grid: {_dataset_list(not_here)}."
    if not not_there.empty:
        note += f" Not in the paper: {_dataset_list(not_there)}."
    return head + shown.to_markdown(index=False, disable_numparse=True) + note + "\n"


def _ours(r: object) -> str:
    if r.status != "compared":
        return r.status
    return format_cell(r.ours_mean, r.ours_std, int(r.ours_n_seeds), r.ours_missing_seeds, math.nan, False, MARKDOWN)


def _within(within: object, n_seeds: float) -> str:
    if pd.isna(within):
        return "n/a (1 seed)" if pd.notna(n_seeds) and n_seeds == 1 else ""
    return "yes" if within else "no"


# ---------------------------------------------------------------------------------------------
# The claim


def verdict(natural_diff: float, aa_diff: float) -> str:
    """"holds", or "does not hold (...)" naming the failing part, from PART − base differences of the means."""
    if math.isnan(natural_diff) or math.isnan(aa_diff):
        return f"not measured (no {'natural accuracy' if math.isnan(natural_diff) else 'AA'})"
    failures = ([f"natural {signed(natural_diff)}"] if natural_diff <= 0 else []) + (
        [f"AA {signed(aa_diff)}"] if aa_diff < -AA_TOLERANCE - 1e-9 else [])
    return f"does not hold ({', '.join(failures)})" if failures else "holds"


def claim_verdicts(table: pd.DataFrame, paper: pd.DataFrame) -> pd.DataFrame:
    """Per PART variant of the grid (dataset, family, s): the claim on our means and on the paper's."""
    columns = set(table["attack"])
    diffs = table.set_index(["dataset", "variant", "attack"])
    rows = []
    for v in _variants(table).itertuples():
        if not v.part:
            continue
        ours = {a: diffs["diff"].get((v.dataset, v.variant, a), math.nan) for a in ("natural", "aa")}
        involved = diffs.loc[[(v.dataset, name, a) for name in (v.variant, v.base_variant) if pd.notna(name)
                              for a in ("natural", "aa") if a in columns]]
        paper_nat, paper_aa, paper_verdict = _paper_claim(paper, v)
        rows.append({"dataset": v.dataset, "arch": v.arch, "family": v.family, "base_variant": v.base_variant,
                     "variant": v.variant, "label": v.label, "s": v.s, "natural_diff": ours["natural"],
                     "aa_diff": ours["aa"], "min_n_seeds": int(involved["n_seeds"].min()),
                     "complete": bool((involved["missing_seeds"] == "").all()),
                     "verdict": _our_verdict(v, ours, involved), "paper_natural_diff": paper_nat,
                     "paper_aa_diff": paper_aa, "paper_verdict": paper_verdict})
    return pd.DataFrame(rows, columns=["dataset", "arch", "family", "base_variant", "variant", "label", "s",
                                       "natural_diff", "aa_diff", "min_n_seeds", "complete", "verdict",
                                       "paper_natural_diff", "paper_aa_diff", "paper_verdict"])


def _our_verdict(v: object, diffs: dict[str, float], involved: pd.DataFrame) -> str:
    if pd.isna(v.base_variant):
        return "not measured (no base method in the family)"
    if "aa" not in involved.index.get_level_values("attack"):
        return "not measured (no AA)"
    waiting = involved.loc[involved["n_seeds"] == 0, "label"].drop_duplicates()
    if not waiting.empty:
        return f"not measured (no results yet: {', '.join(waiting)})"
    return verdict(diffs["natural"], diffs["aa"])


def _paper_claim(paper: pd.DataFrame, v: object) -> tuple[float, float, str]:
    """(natural diff, AA diff, verdict) of the paper's row matching variant ``v``."""
    same = paper[(paper["dataset"] == v.dataset) & (paper["arch"] == v.arch) & (paper["base_method"] == v.base_method)]
    if same.empty:
        return math.nan, math.nan, "not in the paper"
    part, base = same[same["s_key"] == v.s_key], same[~same["part"]]
    if part.empty or base.empty:
        return math.nan, math.nan, f"not in the paper (no {'base' if base.empty else f's = {v.s}'} row)"
    part_mean, base_mean = (rows.set_index("attack")["paper_mean"] for rows in (part, base))
    nat, aa = (part_mean[a] - base_mean[a] for a in ("natural", "aa"))
    return nat, aa, verdict(nat, aa)


def verdicts_markdown(verdicts: pd.DataFrame) -> str:
    """The claim, family by family, for our numbers and the paper's."""
    head = ("# The paper's claim: PART raises natural accuracy without lowering AA by more than "
            f"{AA_TOLERANCE} points\n\n")
    if verdicts.empty:
        return head + "This grid has no PART variant: nothing to judge.\n"
    shown = pd.DataFrame({
        "Dataset": [dataset_name(d, a) for d, a in zip(verdicts["dataset"], verdicts["arch"])],
        "Family": verdicts["family"], "PART row": verdicts["label"],
        "Ours: Δ natural": [_num(d) for d in verdicts["natural_diff"]],
        "Ours: Δ AA": [_num(d) for d in verdicts["aa_diff"]],
        "Ours": [v if c else f"{v} †" for v, c in zip(verdicts["verdict"], verdicts["complete"])],
        "Paper: Δ natural": [_num(d) for d in verdicts["paper_natural_diff"]],
        "Paper: Δ AA": [_num(d) for d in verdicts["paper_aa_diff"]],
        "Paper": verdicts["paper_verdict"]})
    note = ("\n\nΔ = mean of the PART row − mean of its family's base method (accuracy points); the claim holds when "
            f"Δ natural > 0 and Δ AA ≥ −{AA_TOLERANCE}. Judged on means alone; the main table gives the stds. "
            "† = computed from fewer seeds than the grid's (see the main table).\n")
    return head + shown.to_markdown(index=False, disable_numparse=True) + note


def _num(value: float) -> str:
    return "" if math.isnan(value) else signed(value)
