"""Snakemake adapter: the main table's tables, the paper beside ours and the claim's verdicts."""

from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from part.aggregate import OUTPUTS, write_tables

declared = {key: Path(snakemake.output[key]) for key in OUTPUTS}
out_dir = declared["main_csv"].parent
if declared != {key: out_dir / name for key, name in OUTPUTS.items()}:
    raise ValueError(f"rules/aggregate.smk declares {declared}, but part.aggregate writes {OUTPUTS} into one "
                     "directory: make the rule's outputs match part.aggregate.OUTPUTS")
with open(snakemake.log[0], "w") as log, redirect_stdout(log), redirect_stderr(log):
    paths = write_tables(snakemake.config, out_dir)
    print("\n".join(f"wrote {p}" for p in paths.values()))
