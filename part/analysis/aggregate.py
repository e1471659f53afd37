"""From the grid's ``metrics.json`` files to the main table: mean ± std over seeds, in the paper's layout.

One row per (dataset, arch, variant), one column per attack plus the per-example worst case. The
standard deviation is the sample standard deviation over seeds (ddof = 1, as papers' "mean ± std"
over a handful of runs usually is). Every output says how many seeds a number averages and which are
missing, so a table built from an incomplete grid says so instead of silently averaging fewer runs;
and the files a row averages (or that a PART row is compared with) must come from the same settings
(``check_consistent``), so a stale or mis-configured run stops the table instead of blurring it.

The family's base method (the row a PART variant's difference is taken to) is derived from the run
configs, not from labels: the variant of the same family whose method is the PART variant's base
method (``at`` for ``part``, ``trades`` for ``part_trades``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from part.analysis import compare, stats
from part.analysis.tablefmt import COLUMNS, LATEX, MARKDOWN, Style, dataset_name, format_cell, latex_escape
from part.base import files
from part.base.grid import REPRODUCTION_TOLERANCE, TABLE_FILES, Grid, Run, Variant
from part.base.vocabulary import AUTOATTACKS, SPLIT_SIZES
from part.evaluation.results import load_correct, read_finite_json, worst_case_correct

OUTPUTS = TABLE_FILES
"""Every file ``write_tables`` writes, by key, below the tables directory."""

RUN_KEYS_FREE = ("seed", "data_dir", "device")
"""Run-config keys the seeds of one row may differ in: the seed, and where data and computation lived."""
ENTRY_KEYS_COMPARED = ("n_examples", "subset", "split", "precision", "checkpoint")
"""Keys of an attack's entry (besides its settings) that every file of a dataset must share."""
SETTINGS_KEYS_FREE = ("batch_size",)
"""Attack settings that change throughput only."""


class MismatchError(ValueError):
    """Metrics files that one table averages or compares were produced under different settings."""


@dataclass(frozen=True)
class Record:
    """One run's ``metrics.json``, with the grid cell it belongs to."""
    run: Run
    path: Path
    metrics: dict[str, Any]


def existing_metrics(grid: Grid, runs: Iterable[Run] | None = None) -> list[Path]:
    """The merged results of the tables' checkpoint (``metrics.json`` for the paper's final weights) that
    those of ``runs`` (default: the main table's) have (see ``Grid.existing``)."""
    return grid.existing(grid.metrics_name, runs)


def read_metrics(grid: Grid, paths: Iterable[str | Path], variants: Mapping[str, Variant]) -> list[Record]:
    """The metrics files ``paths`` of rows ``variants``, each checked to be the run the grid puts there.

    Every path must exist: a declared input that is missing is an error, never a row silently shorter.
    """
    records = []
    for path in map(Path, paths):
        run = grid.run_at(path)
        if run.variant not in variants:
            raise ValueError(f"{path}: a run of variant {run.variant!r}, which is not a row of this table "
                             f"({', '.join(variants)})")
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; the table reads it (evaluate the run first)")
        metrics = read_finite_json(path, "delete it and merge the run's results again")
        recorded = metrics["run"]
        expected = {"dataset": run.dataset, "model": run.arch, "method": run.config.method, "seed": run.seed}
        if {k: recorded[k] for k in expected} != expected:
            raise ValueError(f"{path}: records run {recorded}, but the grid puts {expected} here")
        records.append(Record(run, path, metrics))
    return records


def collect(grid: Grid, paths: Iterable[str | Path], variants: Mapping[str, Variant] | None = None) -> pd.DataFrame:
    """Long table of per-seed accuracies (%) of the metrics files ``paths``, once ``check_consistent``
    has passed on them; rows are the main table's unless ``variants`` (an experiment's) are given."""
    variants = grid.variants if variants is None else variants
    records = read_metrics(grid, paths, variants)
    check_consistent(records)
    return per_seed_frame(records, variants)


def per_seed_frame(records: list[Record], variants: Mapping[str, Variant]) -> pd.DataFrame:
    """One row per (run, attack) and per run's worst case: accuracy, test examples, the attack's seed."""
    rows = []
    for rec in records:
        run, variant = rec.run, variants[rec.run.variant]
        base = {"dataset": run.dataset, "arch": run.arch, "variant": run.variant, "label": variant.label,
                "family": variant.family, "seed": run.seed}
        for attack, entry in rec.metrics["attacks"].items():
            rows.append({**base, "attack": attack, "accuracy": entry["accuracy"], "n_examples": entry["n_examples"],
                         "attack_seed": entry["settings"].get("seed")})
        worst = rec.metrics["worst_case"]
        rows.append({**base, "attack": "worst_case", "accuracy": worst["accuracy"], "n_examples": worst["n_examples"],
                     "attack_seed": None})
    frame = pd.DataFrame(rows, columns=["dataset", "arch", "variant", "label", "family", "seed", "attack",
                                        "accuracy", "n_examples", "attack_seed"])
    return frame.astype({"attack_seed": "Int64"})


Flags = dict[tuple[str, str, str], dict[int, tuple[np.ndarray, np.ndarray]]]
"""Per-example results by (dataset, variant, attack), then seed: (test indices, correct flags)."""


def correct_flags(records: list[Record]) -> Flags:
    """Every evaluated attack's per-example flags (``eval/<attack>.correct.npz``) of the runs read."""
    flags: Flags = {}
    for rec in records:
        run = (rec.run.dataset, rec.run.variant)
        checkpoint = rec.metrics["checkpoint"]
        for attack in rec.metrics["attacks"]:
            correct, index = load_correct(rec.path.parent, attack, checkpoint)
            flags.setdefault((*run, attack), {})[rec.run.seed] = (index, correct)
        correct, index = worst_case_correct(rec.path.parent, rec.metrics["worst_case"]["attacks"], checkpoint)
        flags.setdefault((*run, "worst_case"), {})[rec.run.seed] = (index, correct)
    return flags


def _stacked(runs: dict[int, tuple[np.ndarray, np.ndarray]], seeds: list[int],
             where: str) -> tuple[np.ndarray, np.ndarray]:
    """(test indices, (seeds, examples) bool table) of the given seeds; all on the same test examples."""
    index = runs[seeds[0]][0]
    for seed in seeds[1:]:
        if not np.array_equal(runs[seed][0], index):
            raise MismatchError(f"{where}: seeds {seeds[0]} and {seed} were evaluated on different test examples; "
                                "re-evaluate the stale one so that its flags can be paired")
    return index, np.stack([runs[seed][1] for seed in seeds])


def estimates(flags: Flags, dataset: str, variant: str, base: str | None,
              attack: str) -> tuple[stats.Crossed | None, stats.Crossed | None]:
    """(the cell's accuracy, its paired difference to ``base``) as ``part.analysis.stats`` estimates.

    The difference pairs the seeds both rows have (same seed = same initialisation and data order,
    see docs/statistics.md) and the test examples; None where a row has no results.
    """
    runs = flags.get((dataset, variant, attack))
    if not runs:
        return None, None
    where = f"{dataset}/{variant}, attack {attack!r}"
    cell = stats.accuracy(_stacked(runs, sorted(runs), where)[1])
    base_runs = flags.get((dataset, base, attack)) if base is not None and base != variant else None
    return cell, paired(runs, base_runs, where, f"its base {dataset}/{base}, attack {attack!r}")


def paired(runs: dict[int, tuple[np.ndarray, np.ndarray]], base_runs: dict[int, tuple[np.ndarray, np.ndarray]] | None,
           where: str, base_where: str) -> stats.Crossed | None:
    """The paired difference runs − base_runs over the seeds both have (None if none), refusing flags of
    different test examples: a PART row against its base, or one checkpoint of a row against another."""
    common = sorted(set(runs) & set(base_runs or {}))
    if not common:
        return None
    index, ours = _stacked(runs, common, where)
    base_index, theirs = _stacked(base_runs, common, base_where)
    if not np.array_equal(index, base_index):
        raise MismatchError(f"{where} and {base_where} were evaluated on different test examples; their "
                            "difference pairs examples: re-evaluate the stale one")
    return stats.paired_difference(ours, theirs)


# ---------------------------------------------------------------------------------------------
# Consistency of the files a table reads


def check_consistent(records: list[Record]) -> None:
    """Raise ``MismatchError`` naming two files and the setting they differ in, if any.

    The seeds of a row must have evaluated the same attacks (the worst case is over them) and share
    one run config apart from the seed. All files of a dataset must share each attack's settings and
    test examples: a row's mean would otherwise mix attacks, and a PART row's difference to its base
    would compare different measurements.
    """
    rows: dict[tuple[str, str, str], list[Record]] = {}
    blocks: dict[tuple[str, str], list[Record]] = {}
    for rec in records:
        rows.setdefault((rec.run.dataset, rec.run.arch, rec.run.variant), []).append(rec)
        blocks.setdefault((rec.run.dataset, rec.run.arch), []).append(rec)
    for (dataset, arch, variant), recs in rows.items():
        where = f"{dataset}/{arch}/{variant}"
        _same(recs, lambda r: {"evaluated attacks": sorted(r.metrics["attacks"])}, f"the seeds of row {where}")
        _same(recs, _run_settings, f"the seeds of row {where} (run config)")
    for (dataset, arch), recs in blocks.items():
        for attack in sorted({a for r in recs for a in r.metrics["attacks"]}):
            _same([r for r in recs if attack in r.metrics["attacks"]], lambda r: _attack_settings(r, attack),
                  f"the runs of {dataset}/{arch}, attack {attack!r}")


def _run_settings(rec: Record) -> dict[str, Any]:
    path = rec.path.parent / "run.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; checking that the seeds of a row share one run config reads "
                                "it (every finished run has one)")
    return {k: v for k, v in files.read_json_object(path)["config"].items() if k not in RUN_KEYS_FREE}


def _attack_settings(rec: Record, attack: str) -> dict[str, Any]:
    entry = rec.metrics["attacks"][attack]
    settings = {k: v for k, v in entry["settings"].items() if k not in SETTINGS_KEYS_FREE}
    return {**{k: entry[k] for k in ENTRY_KEYS_COMPARED}, "settings": settings}


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items() for k, v in _flat(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): obj}


def _same(records: list[Record], settings: Callable[[Record], dict[str, Any]], what: str) -> None:
    first = _flat(settings(records[0]))
    for rec in records[1:]:
        other = _flat(settings(rec))
        differ = sorted(k for k in first.keys() | other.keys() if first.get(k, "<unset>") != other.get(k, "<unset>"))
        if differ:
            detail = "; ".join(f"{k}: {first.get(k, '<unset>')!r} vs {other.get(k, '<unset>')!r}" for k in differ)
            raise MismatchError(f"{what} come from different settings: {records[0].path} and {rec.path} differ in "
                                f"{detail}. Re-run the stale one (delete its results) so that one table compares "
                                "like with like")


# ---------------------------------------------------------------------------------------------
# Mean ± std over seeds, the family structure, the main table


def summarise(per_seed: pd.DataFrame, seeds: list[int]) -> pd.DataFrame:
    """Mean ± std over seeds per (dataset, arch, variant, attack), with the seeds that are missing."""
    keys = ["dataset", "arch", "variant", "label", "family", "attack"]
    grouped = per_seed.groupby(keys, sort=False)
    out = grouped["accuracy"].agg(mean="mean", std="std", n_seeds="count").reset_index()
    present = grouped["seed"].agg(lambda s: set(s)).reset_index(drop=True)
    out["missing_seeds"] = [" ".join(str(s) for s in seeds if s not in p) for p in present]
    out["cell"] = [format_cell(m, s, n, "", math.nan, False, MARKDOWN)
                   for m, s, n in zip(out["mean"], out["std"], out["n_seeds"])]
    return out


def example_sizes(per_seed: pd.DataFrame) -> pd.Series:
    """Test examples each attack used, by attack (``360``, or ``50/360`` if the runs differ)."""
    return per_seed.groupby("attack", sort=False)["n_examples"].agg(lambda n: "/".join(map(str, sorted(set(n)))))


def variant_table(grid: Grid) -> pd.DataFrame:
    """One row per main-table (dataset, variant), in config order, with what the comparisons read from
    its run config: method, base method, whether it is a PART variant, its s, and its family's base variant.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for run in grid.main:
        if (run.dataset, run.variant) not in rows:
            c, spec = run.config, grid.variants[run.variant]
            rows[run.dataset, run.variant] = {
                "dataset": run.dataset, "arch": run.arch, "variant": run.variant, "label": spec.label,
                "family": spec.family, "method": c.method, "base_method": c.base_method,
                "part": c.pixel_reweighted, "s": c.mask.refresh_every if c.pixel_reweighted else pd.NA}
    frame = pd.DataFrame(list(rows.values()))
    frame["s"] = frame["s"].astype("Int64")
    frame["base_variant"] = [_base_variant(frame, row) for row in frame.itertuples()]
    return frame


def _base_variant(frame: pd.DataFrame, row: Any) -> str | None:
    """The variant a row is compared with: itself for a base method; for a PART variant the one variant
    of its dataset and family that runs its base method without reweighting (None if there is none)."""
    if not row.part:
        return row.variant
    same = frame[(frame["dataset"] == row.dataset) & (frame["family"] == row.family) & ~frame["part"]
                 & (frame["method"] == row.base_method)]
    if len(same) > 1:
        raise ValueError(f"variants: family {row.family!r} has {len(same)} variants running {row.base_method!r} "
                         f"({', '.join(same['variant'])}); the difference of {row.variant!r} to its base method "
                         "needs exactly one (give the others their own family)")
    return same["variant"].iloc[0] if len(same) else None


def table_columns(cfg: dict[str, Any], summary: pd.DataFrame) -> list[str]:
    """The table's columns: the configured attacks and any other evaluated one, in the paper's order, then the
    worst case."""
    present = set(cfg["evaluation"]["attacks"]) | set(summary["attack"]) | {"worst_case"}
    return [a for a in COLUMNS if a in present]


def cells(summary: pd.DataFrame, variants: pd.DataFrame, columns: list[str], seeds: list[int], flags: Flags,
          confidence: float) -> pd.DataFrame:
    """Every (row, column) of the main table — also those no seed has reached (n_seeds 0) — with mean, std,
    n_seeds, missing seeds, the difference to the family's base (PART rows) and whether it is the family's best;
    from ``flags``, the cell's and the difference's ``part.analysis.stats`` estimates (``estimate``, ``diff_estimate``),
    their ``confidence`` intervals and the test examples they rest on."""
    stats_cols = summary[["dataset", "arch", "variant", "attack", "mean", "std", "n_seeds", "missing_seeds"]]
    out = variants.merge(pd.DataFrame({"attack": columns}), how="cross").merge(
        stats_cols, on=["dataset", "arch", "variant", "attack"], how="left")
    out[["mean", "std"]] = out[["mean", "std"]].astype(float)
    out["n_seeds"] = out["n_seeds"].fillna(0).astype(int)
    out["missing_seeds"] = out["missing_seeds"].fillna(" ".join(map(str, seeds)))
    means = out.set_index(["dataset", "variant", "attack"])["mean"]
    out["diff"] = [m - means[d, b, a] if part and pd.notna(b) else np.nan
                   for m, d, b, a, part in zip(out["mean"], out["dataset"], out["base_variant"], out["attack"],
                                               out["part"])]
    best = out.groupby(["dataset", "family", "attack"], sort=False)["mean"].transform("max")
    out["best"] = out["mean"].notna() & np.isclose(out["mean"], best, rtol=0, atol=1e-9)
    pairs = [estimates(flags, d, v, b if part and pd.notna(b) else None, a)
             for d, v, b, a, part in zip(out["dataset"], out["variant"], out["base_variant"], out["attack"],
                                         out["part"])]
    out["estimate"], out["diff_estimate"] = [p[0] for p in pairs], [p[1] for p in pairs]
    out["estimate"], out["diff_estimate"] = pooled(out, "estimate", CELL_POOLS), pooled(out, "diff_estimate")
    out["n_examples"] = pd.array([e.n_examples if e is not None else pd.NA for e in out["estimate"]], dtype="Int64")
    out[["ci_low", "ci_high"]] = stats.intervals(out["estimate"], confidence)
    out[["diff_low", "diff_high"]] = stats.intervals(out["diff_estimate"], confidence)
    return out


CELL_POOLS = ("dataset", "attack", "part")
"""The rows whose cells share a seed ratio: one column's base methods together, its PART rows together. PART's
ε-map adds run-to-run noise of its own, so its seed spread need not be the base methods'; pooled with them, the
base cells over-cover and the PART cells under-cover (the calibration's `spread-ratio` world)."""


def pooled(frame: pd.DataFrame, column: str, keys: tuple[str, ...] = ("dataset", "attack")) -> list[Any]:
    """The estimates of ``column`` with each table column's rows (same ``keys``) sharing one seed ratio, where
    their spreads are homogeneous (``part.analysis.stats.pool``; docs/statistics.md)."""
    out = list(frame[column])
    for rows in frame.groupby(list(keys), sort=False).indices.values():
        for i, est in zip(rows, stats.pool([out[i] for i in rows])):
            out[i] = est
    return out


def main_csv(table: pd.DataFrame) -> pd.DataFrame:
    """The main table, numeric and wide: per column its mean, std, n_seeds, missing seeds, interval, test
    examples, diff with its interval and bold flag."""
    keys = ["dataset", "arch", "variant"]
    stats_cols = ["mean", "std", "n_seeds", "missing_seeds", "ci_low", "ci_high", "n_examples", "diff", "diff_low",
                  "diff_high", "best"]
    wide = table.pivot(index=keys, columns="attack", values=stats_cols)
    columns = list(dict.fromkeys(table["attack"]))
    wide = wide[[(s, a) for a in columns for s in stats_cols]]
    wide.columns = [f"{a}_{s}" for s, a in wide.columns]
    rows = table.drop_duplicates(keys)[[*keys, "label", "family", "base_variant"]]
    return rows.merge(wide.reset_index().infer_objects(), on=keys).rename(columns={"label": "method"})


# ---------------------------------------------------------------------------------------------
# Markdown and LaTeX


def _styled(table: pd.DataFrame, style: Style) -> pd.Series:
    return pd.Series([format_cell(r.mean, r.std, r.n_seeds, r.missing_seeds, r.diff, r.best, style)
                      for r in table.itertuples()], index=table.index)


def _display(table: pd.DataFrame, style: Style) -> pd.DataFrame:
    """Rows dataset → method, columns the attacks; the dataset named on its first row only."""
    shown = table.assign(cell=_styled(table, style))
    keys = ["dataset", "arch", "variant", "label", "family"]
    wide = shown.pivot(index=keys, columns="attack", values="cell")
    columns = list(dict.fromkeys(table["attack"]))
    wide = table.drop_duplicates(keys)[keys].merge(wide[columns].reset_index(), on=keys)
    first = ~wide.duplicated(["dataset", "arch"])
    wide.insert(0, "Dataset", [dataset_name(d, a) if f else "" for d, a, f in zip(wide["dataset"], wide["arch"], first)])
    return wide.rename(columns={"label": "Method", **COLUMNS})


def missing_notes(table: pd.DataFrame, seeds: list[int]) -> list[str]:
    """One line per row averaging fewer seeds than the grid's: which seeds are missing, in which columns."""
    notes = []
    for (dataset, arch, _), row in table.groupby(["dataset", "arch", "variant"], sort=False):
        gaps = row[row["missing_seeds"] != ""]
        if gaps.empty:
            continue
        by_seeds = gaps.groupby("missing_seeds", sort=False)["attack"].agg(list)
        parts = [f"seed{'s' if ' ' in m else ''} {m.replace(' ', ', ')} missing in "
                 + ("every column" if len(attacks) == len(row) else ", ".join(COLUMNS[a] for a in attacks))
                 for m, attacks in by_seeds.items()]
        notes.append(f"{dataset_name(dataset, arch)}, {row['label'].iloc[0]}: " + "; ".join(parts))
    return notes


def budget(per_seed: pd.DataFrame, seeds: list[int]) -> str:
    """The evaluation budget every table states beside its numbers: seeds per cell, test examples per
    attack (the first N of the test split) and the AutoAttack seed."""
    sizes = example_sizes(per_seed)
    aa_seeds = per_seed.loc[per_seed["attack"].isin(AUTOATTACKS), "attack_seed"].dropna().unique()
    aa = f"; AutoAttack seed {'/'.join(map(str, sorted(aa_seeds)))}" if len(aa_seeds) else ""
    return (f"Evaluation budget: {len(seeds)} seed{'s' if len(seeds) != 1 else ''} per cell "
            f"({', '.join(map(str, seeds))}); test examples per attack (the first N of the test split): "
            + ", ".join(f"{COLUMNS[a]} {sizes[a]}" for a in COLUMNS if a in sizes and a != "worst_case")
            + f"{aa}.")


def caption(table: pd.DataFrame, per_seed: pd.DataFrame, seeds: list[int]) -> str:
    """What every number of the main table is (plain text with ± and †; ``latex_escape`` for LaTeX)."""
    bases = table.loc[table["part"] & table["base_variant"].notna(), "base_variant"].drop_duplicates()
    labels = dict(zip(table["variant"], table["label"]))
    base_text = "base rows: " + ", ".join(labels[b] for b in bases)
    return (f"Test accuracy (%): mean ± sample standard deviation (ddof = 1) over {len(seeds)} seed"
            f"{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}) per row; a cell from one seed shows "
            "its value alone. In parentheses (PART rows): the difference of the mean to the family's base method"
            f"{f' ({base_text})' if len(bases) else ''}; its confidence interval is in main.csv and "
            "claim_verdicts.md. Bold: the best mean of each family in each column. "
            "MMA = the PART release's minimum-margin attack; AA = standard AutoAttack; AA (release) = the "
            "release's torchattacks AutoAttack (10 iterations per APGD/FAB attack), the paper's protocol; worst case = the share of "
            f"examples correct under every attack. {budget(per_seed, seeds)} † = fewer seeds than the grid's "
            "(listed below); — = no seed finished.")


def markdown(table: pd.DataFrame, per_seed: pd.DataFrame, seeds: list[int]) -> str:
    """The main table as Markdown: the table, its caption, then the missing-seed footnotes."""
    shown = _display(table, MARKDOWN).drop(columns=["dataset", "arch", "variant", "family"])
    notes = missing_notes(table, seeds)
    text = shown.to_markdown(index=False, disable_numparse=True,
                            colalign=["left", "left", *["right"] * (shown.shape[1] - 2)])
    text += "\n\n" + caption(table, per_seed, seeds) + "\n"
    return text + "".join(f"\n† {n}\n" for n in notes)


def latex(table: pd.DataFrame, per_seed: pd.DataFrame, seeds: list[int], label: str = "tab:main") -> str:
    """The main table as a booktabs ``table`` (needs ``\\usepackage{booktabs,multirow}``): datasets as
    multirow groups separated by rules, families by a partial rule."""
    shown = _display(table, LATEX)
    attacks = [c for c in shown.columns if c in COLUMNS.values()]
    width = 2 + len(attacks)
    lines = ["% Written by part.analysis.aggregate; needs \\usepackage{booktabs} and \\usepackage{multirow}.",
             "\\begin{table}[t]", "\\centering", f"\\caption{{{latex_escape(caption(table, per_seed, seeds))}}}",
             f"\\label{{{label}}}", f"\\begin{{tabular}}{{ll{'r' * len(attacks)}}}", "\\toprule",
             " & ".join(["Dataset", "Method", *attacks]) + " \\\\", "\\midrule"]
    for i, ((dataset, arch), block) in enumerate(shown.groupby(["dataset", "arch"], sort=False)):
        if i:
            lines.append("\\midrule")
        name = f"\\multirow{{{len(block)}}}{{*}}{{{latex_escape(dataset_name(dataset, arch))}}}"
        rows = block.to_dict("records")
        for j, row in enumerate(rows):
            if j and row["family"] != rows[j - 1]["family"]:
                lines.append(f"\\cmidrule(l){{2-{width}}}")
            first = name if j == 0 else ""
            lines.append(" & ".join([first, latex_escape(row["Method"]), *(row[a] for a in attacks)]) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    notes = missing_notes(table, seeds)
    if notes:
        lines += ["\\par\\smallskip", "{\\footnotesize " + " \\\\\n".join(f"$^\\dagger$ {latex_escape(n)}"
                                                                           for n in notes) + "}"]
    return "\n".join([*lines, "\\end{table}", ""])


# ---------------------------------------------------------------------------------------------
# All tables of the grid


def statistics_settings(cfg: dict[str, Any]) -> compare.Settings:
    """The workflow's ``statistics`` section, with ``part.analysis.stats`` / ``part.analysis.compare`` / ``part.base.grid``'s defaults."""
    settings = cfg.get("statistics") or {}
    claim = settings.get("claim") or {}
    return compare.Settings(settings.get("confidence", stats.CONFIDENCE),
                            settings.get("paper_runs", compare.PAPER_RUNS),
                            settings.get("reproduction_tolerance", REPRODUCTION_TOLERANCE),
                            compare.Claim(claim.get("aa_tolerance", compare.Claim.aa_tolerance)))


def test_set_sizes(datasets: Iterable[str]) -> dict[str, int]:
    """Per dataset, the size of its test split: the published one every prepared file is checked against
    (``part.base.vocabulary.SPLIT_SIZES``), whatever ``evaluation.n_examples`` asks for. The advice never asks for more
    test examples than this, and a column that evaluated all of them is the whole test set, the paper's."""
    return {d: SPLIT_SIZES[d][1] for d in datasets}


def write_tables(grid: Grid, paths: Iterable[str | Path], out_dir: str | Path) -> dict[str, Path]:
    """Every table (``OUTPUTS``) of the main-table metrics files ``paths``, below ``out_dir``; refuses
    missing and mismatched metrics files."""
    out_dir, cfg = Path(out_dir), grid.cfg
    records = read_metrics(grid, paths, grid.variants)
    check_consistent(records)
    per_seed = per_seed_frame(records, grid.variants)
    if per_seed.empty:
        raise ValueError(f"{grid.results_dir}: no metrics.json to tabulate (none of the grid's runs is evaluated)")
    seeds = cfg["seeds"]
    settings = statistics_settings(cfg)
    summary = summarise(per_seed, seeds)
    table = cells(summary, variant_table(grid), table_columns(cfg, summary), seeds, correct_flags(records),
                  settings.confidence)
    paper = compare.paper_cells(compare.load_reference("paper_table1"))
    test_sets = test_set_sizes(cfg["datasets"])
    versus = compare.paper_vs_reproduction(table, paper, settings, test_sets)
    verdicts = compare.claim_verdicts(table, paper, settings, test_sets)
    evaluation = budget(per_seed, seeds)
    paths = {key: out_dir / name for key, name in OUTPUTS.items()}
    files.write_text(paths["per_seed"], per_seed.to_csv(index=False))
    files.write_text(paths["summary"], summary.to_csv(index=False, float_format="%.4f"))
    files.write_text(paths["main_csv"], main_csv(table).to_csv(index=False, float_format="%.4f"))
    files.write_text(paths["main_md"], markdown(table, per_seed, seeds))
    files.write_text(paths["main_tex"], latex(table, per_seed, seeds))
    files.write_text(paths["paper_csv"], versus.to_csv(index=False, float_format="%.4f"))
    files.write_text(paths["paper_md"], compare.versus_markdown(versus, table, paper, evaluation, settings))
    files.write_text(paths["verdicts_csv"], verdicts.to_csv(index=False, float_format="%.4f"))
    sensitivity = compare.claim_sensitivity(table, paper, settings, test_sets)
    files.write_text(paths["verdicts_md"], compare.verdicts_markdown(verdicts, evaluation, settings, sensitivity))
    return paths
