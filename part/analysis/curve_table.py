"""The robustness curve's table and the evaluation checks' table, from the runs' ``eval/curve.json`` and
``eval/sanity.json`` (``part.evaluation.curve``, ``part.evaluation.sanity``; read back verified with ``part.evaluation.results.load_check``).

``robustness_curve.{csv,md}``: per dataset, variant and ε, the accuracy with its interval and, for a PART
variant, the paired PART − base difference with its interval and verdict — the main table's estimator
(``part.analysis.stats``, via ``part.analysis.aggregate.estimates``) applied to each ε's per-example flags as if it were a
column: intervals over seeds and test examples, seeds paired by initialisation and examples by index, the
seed-level spread pooled over the rows of an ε where homogeneous (the base rows' cells and the PART rows'
apart). With one seed the seed-to-seed variation is unknown: the interval shown is then the test sample's
alone (``interval_over`` says which), and the verdict is *inconclusive*, its detail saying what the test
sample alone shows (``part.analysis.compare.difference_verdict``).

``sanity.{csv,md}``: one row per evaluated model, one column per check (pass / warn / not run, with the
number compared and its threshold), and the accuracies behind them.

Free of torch: the table jobs read the result files without loading a model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from part.analysis import compare, stats
from part.analysis.aggregate import Flags, Record, _same, estimates, pooled, statistics_settings, variant_table
from part.analysis.tablefmt import dataset_name, format_interval
from part.base import files
from part.base.grid import CHECK_TABLE_FILES, Grid
from part.base.rundir import eval_dir_name
from part.evaluation.results import load_check

CURVE_COLUMNS = ["dataset", "arch", "family", "variant", "label", "base_variant", "part", "train_eps_255", "eps_255",
                 "large", "n_seeds", "seeds", "n_examples", "mean", "std", "ci_low", "ci_high", "interval_over",
                 "diff", "diff_low", "diff_high", "diff_interval_over", "verdict", "detail", "confidence"]
SANITY_ROWS = ("natural", "pgd20", "pgd_strong", "apgd_ce", "apgd_dlr", "whitebox", "square", "large_eps", "transfer")
CHECK_COLUMNS = ("convergence", "black_box", "large_eps", "transfer")
CHECK_TITLES = {"convergence": "Convergence (more steps, restarts)", "black_box": "Black-box ≤ white-box",
                "large_eps": "Large ε → 0 %", "transfer": "Transfer ≤ white-box"}
SETTINGS_KEYS_FREE = ("source", "source_run")
"""Check settings the runs of one dataset may differ in: the transfer check's source is each run's own."""
BOTH, EXAMPLES_ONLY = "seeds and test examples", "test examples only (one seed)"


def read_checks(grid: Grid, paths: Iterable[str | Path], check: str) -> list[Record]:
    """The ``check`` results (``eval/<check>.json``) at ``paths``, each verified (``load_check``) and checked to be
    the run the grid puts there; ``Record.metrics`` holds the entry, with its flags under ``"arrays"``."""
    records = []
    for path in map(Path, paths):
        run = grid.run_at(path)
        expected_path = grid.check_result(run, check)
        if path.name != f"{check}.json" or path.parent.name != eval_dir_name(grid.checkpoint):
            raise ValueError(f"{path}: not a {check} result of the tables' {grid.checkpoint} weights "
                             f"(expected {expected_path})")
        if run.variant not in grid.variants:
            raise ValueError(f"{path}: a run of variant {run.variant!r}, which is not a row of the main table")
        entry, arrays = load_check(grid.run_dir(run), check, grid.checkpoint)
        expected = {"dataset": run.dataset, "model": run.arch, "method": run.config.method, "seed": run.seed}
        if {k: entry["run"][k] for k in expected} != expected:
            raise ValueError(f"{path}: records run {entry['run']}, but the grid puts {expected} here")
        records.append(Record(run, path, {**entry, "arrays": arrays}))
    if not records:
        raise ValueError(f"{grid.results_dir}: no {check} result to tabulate")
    return records


def _compared(rec: Record) -> dict[str, Any]:
    """What every run of a dataset must share: the settings (less each run's transfer source) and the sample."""
    settings = dict(rec.metrics["settings"])
    if "attacks" in settings:
        settings["attacks"] = {k: {kk: vv for kk, vv in v.items() if kk not in SETTINGS_KEYS_FREE}
                               for k, v in settings["attacks"].items()}
    return {k: rec.metrics[k] for k in ("n_examples", "subset", "split", "precision", "checkpoint")} | {
        "settings": settings}


def check_consistent(records: list[Record], check: str) -> None:
    """Raise ``part.analysis.aggregate.MismatchError`` naming two files if the runs of a dataset ran ``check`` differently."""
    blocks: dict[tuple[str, str], list[Record]] = {}
    for rec in records:
        blocks.setdefault((rec.run.dataset, rec.run.arch), []).append(rec)
    for (dataset, arch), recs in blocks.items():
        _same(recs, _compared, f"the {check} results of {dataset}/{arch}")


def curve_flags(records: list[Record]) -> Flags:
    """Per-example flags by (dataset, variant, ε in 1/255), then seed: (test indices, correct)."""
    flags: Flags = {}
    for rec in records:
        arrays = rec.metrics["arrays"]
        for eps, correct in zip(arrays["eps_255"], arrays["correct"]):
            flags.setdefault((rec.run.dataset, rec.run.variant, _eps_key(eps)), {})[rec.run.seed] = (
                arrays["index"], correct)
    return flags


def _eps_key(eps: float) -> str:
    return f"{float(eps):g}"


def curve_table(grid: Grid, paths: Iterable[str | Path]) -> pd.DataFrame:
    """The long table (``CURVE_COLUMNS``) of the curve results ``paths``: one row per (dataset, variant, ε)."""
    confidence = statistics_settings(grid.cfg).confidence
    records = read_checks(grid, paths, "curve")
    check_consistent(records, "curve")
    flags = curve_flags(records)
    variants = variant_table(grid).set_index(["dataset", "variant"])
    present = {(r.run.dataset, r.run.variant) for r in records}
    base_missing = {}
    rows = []
    for dataset in grid.datasets:
        recs = [r for r in records if r.run.dataset == dataset]
        if not recs:
            continue
        points = recs[0].metrics["settings"]["points"]
        for (d, variant), v in variants.loc[[dataset]].iterrows():
            if (d, variant) not in present:
                continue
            base = v["base_variant"] if v["part"] and pd.notna(v["base_variant"]) else None
            if base is not None and (d, base) not in present:
                base_missing[(d, variant)] = base
            run = next(r.run for r in recs if r.run.variant == variant)
            for p in points:
                key = _eps_key(p["eps_255"])
                cell, diff = estimates(flags, d, variant, base, key)
                seeds = sorted(flags[(d, variant, key)])
                accs = [100.0 * flags[(d, variant, key)][s][1].mean() for s in seeds]
                rows.append({"dataset": d, "arch": v["arch"], "family": v["family"], "variant": variant,
                             "label": v["label"], "base_variant": v["base_variant"], "part": bool(v["part"]),
                             "train_eps_255": run.config.attack.eps * 255, "eps_255": float(p["eps_255"]),
                             "large": bool(p["large"]), "n_seeds": len(seeds), "seeds": " ".join(map(str, seeds)),
                             "n_examples": cell.n_examples, "mean": cell.mean,
                             "std": float(np.std(accs, ddof=1)) if len(accs) > 1 else math.nan,
                             "estimate": cell, "diff_estimate": diff if v["part"] else None})
    table = pd.DataFrame(rows)
    table["estimate"] = pooled(table, "estimate", ("dataset", "eps_255", "part"))  # as the main table's cells
    table["diff_estimate"] = pooled(table, "diff_estimate", ("dataset", "eps_255"))
    table[["ci_low", "ci_high"]] = [_interval(e, confidence) for e in table["estimate"]]
    table["interval_over"] = [BOTH if e.seeds_known else EXAMPLES_ONLY for e in table["estimate"]]
    table[["diff_low", "diff_high"]] = [_interval(e, confidence) for e in table["diff_estimate"]]
    table["diff"] = [e.mean if e is not None else math.nan for e in table["diff_estimate"]]
    table["diff_interval_over"] = ["" if e is None else BOTH if e.seeds_known else EXAMPLES_ONLY
                                   for e in table["diff_estimate"]]
    judged = [compare.difference_verdict(e, confidence, f"ε = {eps:g}/255") if part else ("", "")
              for e, eps, part in zip(table["diff_estimate"], table["eps_255"], table["part"])]
    table["verdict"], table["detail"] = [j[0] for j in judged], [j[1] for j in judged]
    for (d, variant), base in base_missing.items():
        at = (table["dataset"] == d) & (table["variant"] == variant)
        table.loc[at, "detail"] = f"no curve of its base {base}"
    table["confidence"] = confidence
    return table.reindex(columns=CURVE_COLUMNS)


def _interval(est: stats.Crossed | None, confidence: float) -> tuple[float, float]:
    """The estimate's interval; from one seed the test sample's alone (``stats.interval`` gives none)."""
    if est is None:
        return math.nan, math.nan
    if est.seeds_known:
        return stats.interval(est, confidence)
    h = float(stats.half_width(est, confidence))
    return stats.bounded(est, est.mean - h, est.mean + h)


def _eps_label(eps: float, large: bool) -> str:
    return f"{eps:g}/255" + (" (large)" if large else "")


def curve_markdown(table: pd.DataFrame) -> str:
    """Per dataset: the accuracy at every ε with its interval, then each PART row's Δ to its base with its
    interval and verdict."""
    confidence = float(table["confidence"].iloc[0])
    level = f"{100 * confidence:g} %"
    out = ["# Robustness curve: accuracy against ℓ∞ PGD at each ε", "",
           f"Accuracy (%) on the first test examples, mean over seeds [{level} interval]; Δ = PART row − its family's "
           "base method (points), paired by seed and test example, with its interval and verdict (*higher* / "
           "*lower*: the interval lies wholly above / below 0; *inconclusive* otherwise). Intervals cover seeds and "
           "test examples (the main table's estimator, per ε); from one seed they cover the test sample only and "
           "the verdict stays inconclusive (the CSV's `detail` says what the test sample alone shows). The large ε "
           "is the unbounded-budget check: every model should be at ≈ 0 %. Attack: PGD with α and steps scaled "
           "with ε (part.evaluation.curve); docs/evaluation_checks.md.", ""]
    for (dataset, arch), frame in table.groupby(["dataset", "arch"], sort=False):
        eps = list(dict.fromkeys(zip(frame["eps_255"], frame["large"])))
        first = frame.iloc[0]
        seeds = "/".join(map(str, sorted(set(frame["n_seeds"]))))
        out += [f"## {dataset_name(dataset, arch)}", "",
                f"{seeds} seed(s) per row × {int(first['n_examples'])} test examples; training ε of the rows: "
                + ", ".join(f"{e:g}/255" for e in sorted(set(frame["train_eps_255"].round(6)))) + ".", ""]
        head = ["Method", *(_eps_label(e, large) for e, large in eps)]
        out += _md_table(head, [[rows["label"].iloc[0], *(_acc_cell(r) for r in rows.itertuples())]
                                for _, rows in frame.groupby("variant", sort=False)])
        part = frame[frame["part"]]
        if not part.empty:
            out += ["", "Δ PART − base (points):", ""]
            out += _md_table(head, [[f"{rows['label'].iloc[0]} − {_base_label(frame, rows)}",
                                     *(_diff_cell(r) for r in rows.itertuples())]
                                    for _, rows in part.groupby("variant", sort=False)])
        out.append("")
    return "\n".join(out)


def _base_label(frame: pd.DataFrame, rows: pd.DataFrame) -> str:
    base = rows["base_variant"].iloc[0]
    labels = frame.loc[frame["variant"] == base, "label"]
    return labels.iloc[0] if len(labels) else str(base)


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows]


def _acc_cell(r: Any) -> str:
    if math.isnan(r.ci_low):
        return f"{r.mean:.2f}"
    return f"{r.mean:.2f} [{r.ci_low:.2f}, {r.ci_high:.2f}]"


def _diff_cell(r: Any) -> str:
    if math.isnan(r.diff):
        return f"— ({r.detail})" if r.detail else "—"
    return f"{format_interval(r.diff, r.diff_low, r.diff_high)} {r.verdict}"


# ---------------------------------------------------------------------------------------------
# The checks


def sanity_table(grid: Grid, paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per model (dataset, variant, seed) of the sanity results ``paths``: overall status, per check its
    status, the number it compared and its threshold, and the accuracies behind them."""
    records = read_checks(grid, paths, "sanity")
    check_consistent(records, "sanity")
    rows = []
    for rec in sorted(records, key=lambda r: (grid.datasets.index(r.run.dataset), list(grid.variants).index(
            r.run.variant), r.run.seed)):
        e, v = rec.metrics, grid.variants[rec.run.variant]
        row = {"dataset": rec.run.dataset, "arch": rec.run.arch, "variant": rec.run.variant, "label": v.label,
               "family": v.family, "seed": rec.run.seed, "n_examples": e["n_examples"],
               "eps_255": e["settings"]["eps_255"], "status": e["status"]}
        for name in CHECK_COLUMNS:
            c = e["checks"][name]
            row |= {f"{name}_status": c["status"], f"{name}_measure": c["measure"],
                    f"{name}_threshold": c["threshold"], f"{name}_message": c["message"]}
        row |= {f"{r}_accuracy": e["accuracy"].get(r, math.nan) for r in SANITY_ROWS}
        source = e["settings"]["attacks"]["transfer"].get("source_run")
        row["transfer_source_seed"] = source["seed"] if source else pd.NA
        rows.append(row)
    return pd.DataFrame(rows)


def sanity_markdown(table: pd.DataFrame) -> str:
    """The checks as Markdown: a row per model, a column per check; each warning's numbers below."""
    out = ["# Evaluation checks: convergence and gradient masking", "",
           "One row per model, on the table's ε and the first test examples. *pass* / *warn* with the number "
           "compared and (after ≤ / >) its threshold: convergence — the lower bound (points) of what PGD-"
           "steps×restarts takes off PGD-20; black-box — % of examples Square breaks beyond every white-box attack "
           "(AutoAttack's check_square_sr); large ε — % still correct at the large ε; transfer — points by which a "
           "transfer attack from another seed's model beats the white-box worst case. A *warn* means the model's "
           "robust accuracies may be over-stated (gradient masking, an attack that has not converged): read its "
           "numbers below and evaluate it with stronger attacks. What each check measures and where its threshold "
           "comes from: docs/evaluation_checks.md.", ""]
    head = ["Dataset", "Method", "Seed", "Examples", "Overall", *(CHECK_TITLES[c] for c in CHECK_COLUMNS)]
    body = [[dataset_name(r.dataset, r.arch), r.label, str(r.seed), str(r.n_examples), r.status,
             *(_check_cell(getattr(r, f"{c}_status"), getattr(r, f"{c}_measure"), getattr(r, f"{c}_threshold"))
               for c in CHECK_COLUMNS)] for r in table.itertuples()]
    out += _md_table(head, body)
    warned = [(r, c) for r in table.itertuples() for c in CHECK_COLUMNS if getattr(r, f"{c}_status") == "warn"]
    out += ["", f"{len(warned)} warning(s)" + (":" if warned else ".")]
    out += [f"* {dataset_name(r.dataset, r.arch)} {r.label}, seed {r.seed}, {CHECK_TITLES[c].lower()}: "
            f"{getattr(r, f'{c}_message')}" for r, c in warned]
    return "\n".join(out) + "\n"


def _check_cell(status: str, measure: float | None, threshold: float) -> str:
    if status == "not run" or measure is None or (isinstance(measure, float) and math.isnan(measure)):
        return status
    return f"{status} ({measure:.2f} {'≤' if status == 'pass' else '>'} {threshold:g})"


# ---------------------------------------------------------------------------------------------
# Writing


def _write(prefix: str, table: pd.DataFrame, markdown: str, out_dir: str | Path) -> dict[str, Path]:
    """``<prefix>_csv`` and ``<prefix>_md`` of ``CHECK_TABLE_FILES`` below ``out_dir``, each written atomically."""
    out = {key: Path(out_dir) / CHECK_TABLE_FILES[key] for key in (f"{prefix}_csv", f"{prefix}_md")}
    files.write_text(out[f"{prefix}_csv"], table.to_csv(index=False, float_format="%.4f"))
    files.write_text(out[f"{prefix}_md"], markdown)
    return out


def write_curve_table(grid: Grid, paths: Iterable[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """``robustness_curve.{csv,md}`` below ``out_dir`` (the tables directory) from the runs' ``eval/curve.json``."""
    table = curve_table(grid, paths)
    return _write("curve", table, curve_markdown(table), out_dir)


def write_sanity_table(grid: Grid, paths: Iterable[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """``sanity.{csv,md}`` below ``out_dir`` (the tables directory) from the runs' ``eval/sanity.json``."""
    table = sanity_table(grid, paths)
    return _write("sanity", table, sanity_markdown(table), out_dir)
