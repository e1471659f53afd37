"""Best-vs-last (and EMA): the main table's runs evaluated with each kept set of weights, side by side.

The paper evaluates the final epoch's weights (checkpoint ``last``), and so do the tables by default
(``evaluation.checkpoint``). ``evaluation.compare_checkpoints`` evaluates the others a run kept — the best
robust-validation epoch's (``best``), the weight average (``ema``) — with natural accuracy and PGD-20, and
this table puts them beside the main checkpoint: mean ± std over seeds per row, and the paired difference
to the main checkpoint with its confidence interval over seeds *and* test examples (``part.analysis.stats``), read
as higher / lower / inconclusive. Robust overfitting shows as ``best`` > ``last`` on PGD-20; a difference
the interval cannot sign says so, with what would decide it. Where every run of a row peaked on its last
epoch, ``best`` and ``last`` are one set of weights: the row says so instead of an interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from part.analysis import stats
from part.analysis.aggregate import (Record, check_consistent, correct_flags, paired, pooled, read_metrics,
                                     statistics_settings)
from part.analysis.tablefmt import COLUMNS, dataset_name
from part.base import files
from part.base.grid import CHECKPOINT_TABLE_FILES, Grid
from part.base.vocabulary import COMPARE_ATTACKS

CSV_COLUMNS = ["dataset", "arch", "variant", "label", "family", "checkpoint", "attack", "mean", "std", "n_seeds",
               "n_examples", "diff", "diff_low", "diff_high", "verdict", "to_decide", "best_epoch", "epochs"]


def by_checkpoint(records: list[Record]) -> dict[str, list[Record]]:
    """The records grouped by the weights they evaluated, each group checked like one table's files."""
    groups: dict[str, list[Record]] = {}
    for rec in records:
        groups.setdefault(rec.metrics["checkpoint"], []).append(rec)
    for group in groups.values():
        check_consistent(group)
    return groups


def verdict(est: stats.Crossed | None, confidence: float) -> tuple[float, float, str, str]:
    """(low, high, verdict, what would decide it) of a paired difference."""
    if est is None:
        return math.nan, math.nan, "no pair", ""
    low, high = stats.interval(est, confidence)
    if not est.seeds_known:
        return low, high, "inconclusive", "a second seed (one seed leaves the seed-to-seed spread unknown)"
    if low > 0 or high < 0:
        return low, high, "higher" if low > 0 else "lower", ""
    if abs(est.mean) < 1e-9:
        return low, high, "inconclusive", "no difference observed: more data at this spread cannot sign it"
    seeds = stats.to_decide(est, est.mean, "n_seeds", confidence)
    return low, high, "inconclusive", (f"≈ {seeds} seeds ({100 * stats.POWER:g} % power at the observed difference "
                                       "and spread)" if seeds else "not within 1000 seeds at the observed spread")


SAME_WEIGHTS = "same weights"
"""The verdict of best against last where they are one set of weights: nothing to measure, no interval."""


def _best_epochs(infos: list[dict]) -> tuple[float, int | None]:
    """Mean best-validation epoch of a row's runs and the epochs they ran (both from their run.json)."""
    best = [i["best"]["epoch"] for i in infos if i.get("best")]
    return (float(np.mean(best)) if best else math.nan), infos[0]["epochs_completed"] if infos else None


def same_weights(checkpoint: str, main: str, infos: list[dict]) -> bool:
    """Whether ``checkpoint`` and ``main`` hold the same weights in every run of a row (``infos``: their run.json):
    best and last do where each run's best validated epoch is its last. Their difference is then zero by
    construction, and an interval around it would pretend to measure one."""
    return {checkpoint, main} == {"best", "last"} and bool(infos) and all(
        i.get("best") and i["best"]["epoch"] == i["epochs_completed"] for i in infos)


def checkpoint_table(grid: Grid, paths: Iterable[str | Path]) -> pd.DataFrame:
    """Long table (``CSV_COLUMNS``): per main-table row, checkpoint and attack of ``COMPARE_ATTACKS``, the
    mean ± std over seeds and, for the compared checkpoints, the paired difference to the main one."""
    confidence = statistics_settings(grid.cfg).confidence
    groups = by_checkpoint(read_metrics(grid, paths, grid.variants))
    if grid.checkpoint not in groups:
        raise ValueError(f"{grid.results_dir}: no {grid.metrics_name} among the files given; the comparison is "
                         f"to the main checkpoint ({grid.checkpoint!r})")
    main_flags = correct_flags(groups[grid.checkpoint])
    rows = []
    for checkpoint in (grid.checkpoint, *grid.compared_checkpoints):
        flags = main_flags if checkpoint == grid.checkpoint else correct_flags(groups.get(checkpoint, []))
        cells: dict[tuple[str, str, str], list[Record]] = {}
        for rec in groups.get(checkpoint, []):
            cells.setdefault((rec.run.dataset, rec.run.arch, rec.run.variant), []).append(rec)
        for (dataset, arch, variant), recs in cells.items():
            infos = [files.read_json_object(r.path.parent / "run.json") for r in recs]
            best_epoch, epochs = _best_epochs(infos)
            row = {"dataset": dataset, "arch": arch, "variant": variant, "label": grid.variants[variant].label,
                   "family": grid.variants[variant].family, "checkpoint": checkpoint, "best_epoch": best_epoch,
                   "epochs": epochs, "same": same_weights(checkpoint, grid.checkpoint, infos)}
            for attack in COMPARE_ATTACKS:
                acc = [r.metrics["attacks"][attack]["accuracy"] for r in recs if attack in r.metrics["attacks"]]
                n = [r.metrics["attacks"][attack]["n_examples"] for r in recs if attack in r.metrics["attacks"]]
                key = (dataset, variant, attack)
                est = None if checkpoint == grid.checkpoint else paired(
                    flags.get(key, {}), main_flags.get(key), f"{dataset}/{variant} {checkpoint}, attack {attack!r}",
                    f"its {grid.checkpoint} weights, attack {attack!r}")
                rows.append({**row, "attack": attack, "mean": float(np.mean(acc)) if acc else math.nan,
                             "std": float(np.std(acc, ddof=1)) if len(acc) > 1 else math.nan, "n_seeds": len(acc),
                             "n_examples": min(n) if n else 0, "estimate": est})
    table = pd.DataFrame(rows)
    table["estimate"] = pooled(table, "estimate", ("dataset", "checkpoint", "attack"))
    judged = [(math.nan, math.nan, "", "") if c == grid.checkpoint else
              (math.nan, math.nan, SAME_WEIGHTS, "") if same else verdict(e, confidence)
              for e, c, same in zip(table["estimate"], table["checkpoint"], table["same"])]
    table["diff"] = [e.mean if e is not None else math.nan for e in table["estimate"]]
    table[["diff_low", "diff_high", "verdict", "to_decide"]] = pd.DataFrame(judged, index=table.index)
    return table.reindex(columns=CSV_COLUMNS)


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.2f}" + ("" if math.isnan(std) else f" ± {std:.2f}")


def markdown(table: pd.DataFrame, main: str, confidence: float) -> str:
    """Per dataset, one row per variant: each checkpoint's natural and PGD-20 accuracy, then each compared
    checkpoint's PGD-20 difference to ``main`` with its interval and verdict."""
    checkpoints = list(dict.fromkeys(table["checkpoint"]))
    compared = [c for c in checkpoints if c != main]
    level = f"{100 * confidence:g} %"
    out = [f"# Checkpoints: {', '.join(checkpoints)} (the tables read {main!r})", "",
           "Accuracy (%) on the test set, mean ± std over seeds; Δ = compared − main checkpoint on PGD-20, "
           f"paired by seed and test example, with its {level} interval over seeds and test examples.", ""]
    for (dataset, arch), frame in table.groupby(["dataset", "arch"], sort=False):
        out += [f"## {dataset_name(dataset, arch)}", ""]
        head = ["Method", *(f"{c} {COLUMNS[a]}" for c in checkpoints for a in COMPARE_ATTACKS),
                *(f"Δ {COLUMNS['pgd20']} {c} − {main}" for c in compared), "best epoch"]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for variant, rows in frame.groupby("variant", sort=False):
            at = rows.set_index(["checkpoint", "attack"])
            cells = [rows["label"].iloc[0]]
            cells += [_cell(at.loc[(c, a), "mean"], at.loc[(c, a), "std"]) if (c, a) in at.index else "—"
                      for c in checkpoints for a in COMPARE_ATTACKS]
            for c in compared:
                if (c, "pgd20") not in at.index:
                    cells.append("—")
                    continue
                r = at.loc[(c, "pgd20")]
                if r["verdict"] == SAME_WEIGHTS:
                    cells.append(f"{SAME_WEIGHTS} (best epoch = last)")
                    continue
                interval = "" if math.isnan(r["diff_low"]) else f" [{r['diff_low']:+.2f}, {r['diff_high']:+.2f}]"
                decide = f" ({r['to_decide']})" if r["verdict"] == "inconclusive" and r["to_decide"] else ""
                cells.append(f"{r['diff']:+.2f}{interval} {r['verdict']}{decide}" if not math.isnan(r["diff"]) else "—")
            epoch = rows["best_epoch"].iloc[0]
            cells.append("—" if math.isnan(epoch) else f"{epoch:.1f} of {int(rows['epochs'].iloc[0])}")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def write_checkpoint_table(grid: Grid, paths: Iterable[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """``checkpoints.{csv,md}`` below ``out_dir`` (the tables directory) from the main runs' metrics files
    of the main and every compared checkpoint."""
    table = checkpoint_table(grid, paths)
    outputs = {key: Path(out_dir) / name for key, name in CHECKPOINT_TABLE_FILES.items()}
    confidence = statistics_settings(grid.cfg).confidence
    files.write_text(outputs["csv"], table.to_csv(index=False, float_format="%.4f"))
    files.write_text(outputs["md"], markdown(table, grid.checkpoint, confidence))
    return outputs

