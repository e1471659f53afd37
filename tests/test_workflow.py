"""The Snakemake workflow itself: lint, a bad grid, the tiny grid's jobs and tables (the demo's outputs are
checked by test_demo.py after `make demo`; the full grid's one dry run is in test_slurm_profile.py, with the
resources the SLURM profile gives each job)."""

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from part.workflow.fingerprint import FILE_NAME, recorded, source_fingerprint, stale_reason

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args, cwd=ROOT, check=True):
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def test_lint_is_clean():
    out = snakemake("--lint", "--cores", "1")
    assert "Congratulations, your workflow is in a good condition!" in out


def test_a_bad_grid_stops_before_any_job(tmp_path):
    cfg = (ROOT / "configs" / "demo.yaml").read_text().replace("run: {method: at}", "run: {method: at, attack: {eps_low: 0.9}}")
    (tmp_path / "bad.yaml").write_text(cfg)
    out = snakemake("-n", "--cores", "1", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    assert "key 'attack.eps_low'" in out and "variants.at" in out


def dry_run_jobs(*args, cwd):
    """Jobs per rule of a dry run, from Snakemake's job stats table."""
    out = snakemake("-n", "--cores", "1", *args, cwd=cwd)
    table = out[out.index("Job stats:"):].splitlines()[3:]
    return {line.split()[0]: int(line.split()[1]) for line in table[:table.index(next(l for l in table if
                                                                                       l.startswith("total")))]}


def test_the_compared_weights_are_evaluated_in_the_main_runs_evaluation_job(tmp_path):
    """per_model: each main-table run's one evaluation job evaluates its last, best and EMA weights (torch is
    loaded once for the three); per_attack: the compared weights get a job of their own beside the attacks'."""
    demo = ["--configfile", str(ROOT / "configs" / "demo.yaml"), "--snakefile", str(ROOT / "Snakefile")]
    main_runs, experiment_runs = 9 * 2, 15
    per_model = dry_run_jobs(*demo, cwd=tmp_path)
    assert per_model["evaluate_checkpoints"] == main_runs and per_model["metrics"] == experiment_runs
    assert "evaluate" not in per_model
    per_attack = dry_run_jobs(*demo, "--config", "evaluation={jobs: per_attack}", cwd=tmp_path)
    assert per_attack["evaluate_checkpoints"] == main_runs and per_attack["metrics"] == main_runs + experiment_runs
    assert per_attack["evaluate"] == main_runs * 5 + experiment_runs * 2


CLOCKS = ("seconds", "images_per_second", "seconds_by_attack", "created", "environment")


def _without_timing(result):
    """An evaluation result less what differs between two runs of the same evaluation: clocks and the host,
    at any depth (a curve's points and a sanity check's attacks carry their own seconds)."""
    if isinstance(result, dict):
        return {k: _without_timing(v) for k, v in result.items() if k not in CLOCKS}
    return [_without_timing(v) for v in result] if isinstance(result, list) else result


@pytest.mark.slow
def test_one_job_per_attack_gives_the_files_and_tables_of_one_job_per_model(tiny_workflow, tmp_path):
    """evaluation.jobs only cuts the same work into other jobs: profiles/slurm's per_attack evaluation of the
    trained runs gives the per-example flags, results and tables of the default per_model run, byte for byte.
    (Only the tables are asked for: the figures, experiments and README drawn from them are not compared.)"""
    per_model, args = tiny_workflow
    per_attack = tmp_path / "per_attack"
    shutil.copytree(per_model, per_attack, symlinks=True)
    results = per_attack / "results"
    tables = sorted(p.name for p in (per_model / "results" / "tables").iterdir())
    for evaluated in [*results.rglob("eval"), *results.rglob("metrics*.json"), results / "tables"]:
        shutil.rmtree(evaluated) if evaluated.is_dir() else evaluated.unlink()
    shutil.rmtree(per_attack / "logs")
    targets = [f"results/tables/{name}" for name in tables]  # before --config, which takes every word after it
    snakemake(*targets, *args, "--config", "evaluation={jobs: per_attack}", cwd=per_attack)
    jobs = sorted(p.relative_to(per_attack / "logs").as_posix() for p in (per_attack / "logs").rglob("*.log"))
    assert sum(j.startswith("evaluate/") for j in jobs) == 4 * 3 and not any(j.startswith("train/") for j in jobs)
    assert sum(j.startswith("evaluate_check/") for j in jobs) == 2 * 2  # curve + sanity of both seed-0 models
    flags = sorted(p.relative_to(per_model).as_posix() for p in per_model.rglob("eval/*.correct.npz"))
    assert len(flags) == 4 * 3 + 2 * 2
    for name in flags:
        assert (per_attack / name).read_bytes() == (per_model / name).read_bytes(), name
        result = Path(name.replace(".correct.npz", ".json"))
        ours, theirs = (json.loads((d / result).read_text()) for d in (per_attack, per_model))
        assert _without_timing(ours) == _without_timing(theirs), result
    assert {"main.csv", "main.md", "claim_verdicts.csv", "per_seed.csv", "sanity.csv", "robustness_curve.csv"} <= set(tables)
    for name in tables:
        assert (results / "tables" / name).read_bytes() == (per_model / "results" / "tables" / name).read_bytes(), name


@pytest.mark.slow
def test_the_robustness_curve_and_the_sanity_checks_reach_their_tables_figure_and_readme(tiny_workflow):
    workdir, _ = tiny_workflow
    results = workdir / "results"
    curve = pd.read_csv(results / "tables" / "robustness_curve.csv")
    # 2 variants x (3 budgets + the large one), seed 0 only, 40 examples; ε = 0 is natural accuracy
    assert len(curve) == 2 * 4 and set(curve["variant"]) == {"at", "part_s1"}
    assert list(curve.loc[curve["variant"] == "at", "eps_255"])[:3] == [0, 12, 24]
    natural = json.loads((results / "digits/small_cnn/at/seed0/eval/natural.json").read_text())
    at_zero = json.loads((results / "digits/small_cnn/at/seed0/eval/curve.json").read_text())
    assert at_zero["eps_255"][0] == 0 and at_zero["n_examples"] == 40
    flags = np.load(results / "digits/small_cnn/at/seed0/eval/natural.correct.npz")["correct"][:40]
    assert at_zero["n_correct"][0] == int(flags.sum())  # eps = 0 is natural accuracy, example for example
    assert natural["n_examples"] == 100
    sanity = pd.read_csv(results / "tables" / "sanity.csv")
    assert len(sanity) == 2 and set(sanity["seed"]) == {0}
    for check in ("convergence", "black_box", "large_eps", "transfer"):
        assert set(sanity[f"{check}_status"]) <= {"pass", "warn"}, check  # transfer ran: seed 1 is the source
    source = json.loads((results / "digits/small_cnn/part_s1/seed0/eval/sanity.json").read_text())
    assert source["settings"]["attacks"]["transfer"]["source_run"]["seed"] == 1
    assert (results / "figures" / "robustness_curve_digits.png").stat().st_size > 10_000
    readme = (results / "README.md").read_text()
    assert "## Evaluation checks" in readme and "robustness_curve_digits.png" in readme


@pytest.mark.slow
def test_every_job_of_a_workflow_reports_its_cost_and_results_readme_adds_them_up(tiny_workflow):
    """The cost line of every job's log (part.workflow.joblog), read back per rule by benchmarks/workflow_cost.py and
    results/README.md: each job once, none without its cost, a torch job at least its interpreter's start."""
    workdir, _ = tiny_workflow
    logs = sorted((workdir / "logs").rglob("*.log"))
    assert logs and all("[part] job cost: " in log.read_text() for log in logs), logs
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "workflow_cost.py"), "--attribute", str(workdir)],
                         capture_output=True, text=True, check=True).stdout
    rules = json.loads(out)["rules"]
    assert sum(rule["jobs"] for rule in rules.values()) == len(logs)
    assert rules["train"]["jobs"] == 4 and rules["metrics"]["jobs"] == 4 and rules["evaluate_check"]["jobs"] == 4
    assert rules["train"]["cpu_s"] > 4 * 1.0 and rules["metrics"]["cpu_s"] > 4 * 1.0
    assert all(0 < rule["cpu_s"] <= rule["wall_s"] * 2 for rule in rules.values())  # one thread a job, two at most
    assert "## Compute (from the jobs' logs)" in (workdir / "results" / "README.md").read_text()


@pytest.mark.slow
def test_the_report_command_the_readme_prints_builds_the_report(tiny_workflow, tmp_path):
    """results/README.md prints the command that builds the HTML report: run as printed in the workflow's
    directory it names the config file the workflow ran with (not config.yaml, whose grid was never run) and
    finds every file. The README also says how often the PART variant computed its ε-maps."""
    source, args = tiny_workflow
    workdir = tmp_path / "run"
    shutil.copytree(source, workdir, symlinks=True)
    readme = (workdir / "results" / "README.md").read_text()
    command = shlex.split(readme.split("```bash\n", 1)[1].split("\n```", 1)[0])
    assert command[1:3] == ["--report", "results/report.html"]
    assert command[command.index("--configfile") + 1] == args[args.index("--configfile") + 1] == "grid.yaml"
    assert "* ε-maps on digits: s = 1 over 3 PART epochs: computed 3 times (PART (s = 1))" in readme
    proc = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Summary" in (workdir / "results" / "report.html").read_text()


def test_the_workflow_records_last_the_fingerprint_of_the_sources_that_made_it(tiny_workflow):
    """results/.fingerprint (part.workflow.fingerprint): the current sources' hash, written after every other output."""
    workdir, _ = tiny_workflow
    results = workdir / "results"
    assert recorded(results) == source_fingerprint(ROOT) and stale_reason(results, ROOT) is None
    newest = max(p.stat().st_mtime for p in results.rglob("*") if p.is_file() and p.name != FILE_NAME)
    assert (results / FILE_NAME).stat().st_mtime >= newest
