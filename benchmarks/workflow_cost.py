"""What a whole workflow costs in CPU-seconds, and where they go: per rule, and Snakemake's own process.

    python benchmarks/workflow_cost.py                             # the demo, in a fresh directory
    python benchmarks/workflow_cost.py --configfile my.yaml -- --scheduler greedy
    python benchmarks/workflow_cost.py --attribute results_of_an_earlier_run/

It runs the documented command (``python -m part.workflow.workflow_lock``, what ``make demo`` runs) in a new
directory and takes the CPU time of everything it started from the kernel (``getrusage`` of the waited-for
children), so nothing escapes. Each job's share comes from the cost line that ``part.workflow.joblog.job_log`` ends
its log with (its process's whole life, start-up included; ``part.workflow.report.job_costs`` reads them); Snakemake's
own process is the rest. Prints one JSON object; it is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from part.base.provenance import environment
from part.workflow.report import job_costs

ROOT = Path(__file__).resolve().parents[1]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_workflow(workdir: Path, configfile: Path, cores: int, extra: list[str]) -> tuple[float, float, int]:
    """The documented command in ``workdir``: its CPU-s (every process it started), wall seconds, exit code."""
    for folder in ("configs", "profiles"):
        shutil.copytree(ROOT / folder, workdir / folder, dirs_exist_ok=True)
    command = [sys.executable, "-m", "part.workflow.workflow_lock", "--cores", str(cores), "--snakefile", str(ROOT / "Snakefile"),
               "--directory", str(workdir), "--configfile", str(configfile.resolve()), *extra]
    cpu, start = children_cpu(), time.perf_counter()
    with open(workdir / "workflow.out", "w") as out:
        code = subprocess.run(command, cwd=workdir, stdout=out, stderr=subprocess.STDOUT).returncode
    return children_cpu() - cpu, time.perf_counter() - start, code


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configfile", type=Path, default=ROOT / "configs" / "demo.yaml")
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--workdir", type=Path, help="where the workflow runs (default: a new temporary directory, kept)")
    p.add_argument("--attribute", type=Path, metavar="DIR", help="only attribute the job logs of a finished run in DIR")
    p.add_argument("extra", nargs="*", help="further snakemake arguments, after --")
    args = p.parse_args()

    report: dict = {"environment": environment()}
    if args.attribute:
        workdir = args.attribute
    else:
        workdir = args.workdir or Path(tempfile.mkdtemp(prefix="workflow_cost_"))
        workdir.mkdir(parents=True, exist_ok=True)
        total, wall, code = run_workflow(workdir, args.configfile, args.cores, args.extra)
        if code != 0:
            sys.exit(f"the workflow failed (exit code {code}); see {workdir / 'workflow.out'}")
        report.update(configfile=str(args.configfile), cores=args.cores, workdir=str(workdir),
                      total_cpu_s=round(total, 2), wall_s=round(wall, 2))
    costs = job_costs(workdir / "logs")
    rules = costs.groupby("stage").agg(jobs=("job", "count"), cpu_s=("cpu_seconds", "sum"), wall_s=("seconds", "sum"))
    report.update(jobs=len(costs), jobs_cpu_s=round(costs["cpu_seconds"].sum(), 2),
                  rules={rule: {k: round(float(v), 2) for k, v in row.items()} for rule, row in rules.iterrows()})
    if "total_cpu_s" in report:
        report["snakemake_and_unlogged_cpu_s"] = round(report["total_cpu_s"] - report["jobs_cpu_s"], 2)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
