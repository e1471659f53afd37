"""The cost table of docs/cost.md: from a device check's measurements, or (without ``--json``) from the
shipped estimate that ``part plan`` also falls back to (``part/reference/rates.json``).

    python benchmarks/cost_table.py --json device_check/device_check.json              # print the table
    python benchmarks/cost_table.py --json device_check/device_check.json --readme docs/cost.md   # and rewrite it
    python benchmarks/cost_table.py --readme docs/cost.md                    # the shipped estimate's table

Every training run of the grid (``config.yaml`` through ``part.base.grid``, experiments included) is costed
from the JSON's ``cost_basis``: the model's AT epoch on 50 k 32×32 images, scaled by the dataset's training
images and pixels; TRADES / MART epochs as measured ratios to it (1.1 where not measured); a PART epoch
as its measured training part plus one ε-map refresh on each epoch ``cfg.refreshes_at`` names (none for
the quadrant recipes, which need no CAM). The ratios come from ResNet-18 and are applied to every model.
The costing itself (``Basis``, ``run_seconds``) lives in ``part.workflow.plan``, which ``part plan`` shares.
``--readme FILE`` replaces what lies between FILE's ``cost-table`` markers (the project's table: ``docs/cost.md``).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import yaml

from part.base import grid
from part.base.config import from_dict
from part.data.prepared import SHAPES
from part.workflow.plan import SHIPPED_RATES, TRAIN_IMAGES, Basis, run_seconds, shipped_estimate, shipped_rates

BEGIN, END = "<!-- cost-table:begin -->", "<!-- cost-table:end -->"


def table_rows(grid_cfg: dict[str, Any], basis: Basis) -> list[dict[str, Any]]:
    """Per dataset: one AT run, one PART (s = 1) run and its main-table runs (hours); then the experiments."""
    g = grid.load(grid_cfg)
    main = g.main
    rows = []
    for dataset, spec in grid_cfg["datasets"].items():
        one = {m: from_dict({**(grid_cfg.get("run") or {}), "dataset": dataset, "model": spec["arch"], "method": m,
                             "mask": {"refresh_every": 1}}) for m in ("at", "part")}
        runs = [r for r in main if r.dataset == dataset]
        rows.append({"dataset": dataset, "model": spec["arch"], "train_images": TRAIN_IMAGES[dataset],
                     "side": SHAPES[dataset][1], "at_hours": run_seconds(one["at"], basis) / 3600,
                     "part_hours": run_seconds(one["part"], basis) / 3600, "runs": len(runs),
                     "grid_hours": sum(run_seconds(r.config, basis) for r in runs) / 3600})
    extra = [r for path, r in g.runs.items() if path not in {m.path for m in main}]
    rows.append({"dataset": "experiments", "runs": len(extra),
                 "grid_hours": sum(run_seconds(r.config, basis) for r in extra) / 3600})
    return rows


NAMES = {"cifar10": "CIFAR-10", "svhn": "SVHN", "tinyimagenet200": "TinyImageNet-200"}
MODEL_NAMES = {"resnet18": "ResNet-18", "wrn34_10": "WRN-34-10", "preact_resnet18": "PreAct ResNet-18"}


def provenance(report: dict[str, Any] | None) -> str:
    """Where the table's numbers come from: the device check that measured them, or the shipped estimate."""
    if report is None:
        return (f"**Estimate, not a measurement of this pipeline**: the shipped rates (`part/{SHIPPED_RATES}`, which "
                f"`part plan` falls back to), from {shipped_rates()['provenance']}; scaled")
    return (f"Measured by `benchmarks/device_check.py` on {report['device_name']} ({report['created'][:10]}, "
            f"git {report['environment'].get('git_revision')}): epochs timed on a few batches and extrapolated, "
            "scaled")


def markdown(rows: list[dict[str, Any]], grid_cfg: dict[str, Any], basis: Basis, report: dict[str, Any] | None) -> str:
    variants, seeds = len(grid_cfg["variants"]), len(grid_cfg["seeds"])
    settings = "; ".join(f"{MODEL_NAMES.get(m, m)}: {s}" for m, s in basis.settings.items())
    family = ", ".join(f"{f.upper()} {r:.2f} × AT" for f, r in basis.family.items() if f in ("trades", "mart"))
    lines = [f"{provenance(report)} by training-set size and input pixels, the grid's epochs per run. Settings: "
             f"{settings}; PGD-{basis.steps} AT epochs; PART epoch {basis.part_train:.3f} × AT + refresh "
             f"{basis.refresh:.3f} × AT; {family}. "
             "Regenerate with `benchmarks/cost_table.py` (see *Measuring your own hardware*).", "",
             f"| dataset (model) | one AT run | one PART (s = 1) run | {variants * seeds} runs "
             f"({variants} variants × {seeds} seeds) |", "|---|---:|---:|---:|"]
    for r in rows:
        if r["dataset"] == "experiments":
            lines.append(f"| experiments | | | {r['runs']} more runs ≈ {r['grid_hours']:.1f} GPU-h |")
        else:
            lines.append(f"| {NAMES.get(r['dataset'], r['dataset'])} ({MODEL_NAMES.get(r['model'], r['model'])}), "
                         f"{r['train_images'] // 1000} k × {r['side']}² | {r['at_hours']:.2f} h | {r['part_hours']:.2f} h "
                         f"| ≈ {r['grid_hours']:.1f} GPU-h |")
    return "\n".join(lines) + "\n"


def rewrite_readme(readme: Path, table: str) -> None:
    """Replace the text between the cost-table markers (kept) with ``table``."""
    text = readme.read_text()
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"{readme}: no {BEGIN} ... {END} markers around the cost table")
    readme.write_text(pattern.sub(lambda _: f"{BEGIN}\n{table}{END}", text, count=1))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="device_check.json written by benchmarks/device_check.py (default: the shipped "
                   "estimate)")
    p.add_argument("--config", default="config.yaml", help="the workflow grid to cost (default config.yaml)")
    p.add_argument("--readme", metavar="FILE", help="rewrite the cost table between this Markdown file's cost-table "
                   "markers (the project's: docs/cost.md)")
    args = p.parse_args(argv)
    report = json.loads(Path(args.json).read_text()) if args.json else None
    grid_cfg = yaml.safe_load(Path(args.config).read_text())
    basis = Basis.from_report(report) if report else shipped_estimate().basis
    table = markdown(table_rows(grid_cfg, basis), grid_cfg, basis, report)
    print(table, end="")
    if args.readme:
        rewrite_readme(Path(args.readme), table)


if __name__ == "__main__":
    main()
