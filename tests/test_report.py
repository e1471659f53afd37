"""results/README.md: compute from the jobs' logs, recorded environments, the summary's content."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from part.base import grid
from part.base.grid import compute_resource
from part.workflow import joblog, report

ROOT = Path(__file__).resolve().parents[1]


def job(path, *seconds):
    """A finished job's log: what it printed, then one cost line per attempt (CPU-s half its wall seconds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"[part] epoch 1\n[part] job cost: {s / 2:.2f} CPU-s (user {s / 2:.2f}, sys 0.00), "
                            f"{s:.2f} s wall, peak memory 100 MB\n" for s in seconds))


@pytest.fixture
def logs(tmp_path):
    logs = tmp_path / "logs"
    job(logs / "train/cifar10/resnet18/at/seed0.log", 3600)
    job(logs / "train/tinyimagenet200/wrn34_10/at/seed0.log", 1800, 1800)  # killed once, resumed: 3600 in all
    job(logs / "evaluate/cifar10/resnet18/at/seed0/aa.log", 7200)
    job(logs / "metrics/cifar10/resnet18/at/seed0.log", 36)
    job(logs / "aggregate.log", 3.6)
    (logs / "train/cifar10/resnet18/at/seed1.log").write_text("[part] epoch 1\n")  # still running: no cost yet
    return logs


def test_job_costs_reads_every_finished_jobs_log_with_stage_and_dataset(logs):
    costs = report.job_costs(logs).set_index("job")
    assert len(costs) == 5
    assert costs.loc["train/tinyimagenet200/wrn34_10/at/seed0", "seconds"] == 3600
    assert costs.loc["evaluate/cifar10/resnet18/at/seed0/aa", "dataset"] == "cifar10"
    assert costs.loc["aggregate", "stage"] == "aggregate" and pd.isna(costs.loc["aggregate", "dataset"])
    assert costs.loc["train/cifar10/resnet18/at/seed0", "cpu_seconds"] == 1800


def test_the_cost_line_a_job_writes_is_the_one_job_costs_reads():
    line = joblog.cost_line()
    cpu, wall = joblog.job_cost("printed\n" + line + "more\n" + line)
    assert line.startswith("[part] job cost: ") and 0 < cpu and 0 < wall
    assert joblog.job_cost(line) == pytest.approx((cpu / 2, wall / 2)) and joblog.job_cost("no cost") is None


def test_a_finished_job_keeps_its_objects_out_of_the_exit_collection(tmp_path):
    """After its cost line a job only exits: what it holds then (torch's modules) is frozen, not swept again."""
    body = ("import gc, torch\nfrom part.workflow.joblog import job_log\nwith job_log('job.log'):\n"
            "    before = gc.get_freeze_count()\nprint(before, gc.get_freeze_count(), len(gc.get_objects()))")
    out = subprocess.run([sys.executable, "-c", body], cwd=tmp_path, capture_output=True, text=True, check=True)
    before, frozen, unfrozen = map(int, out.stdout.split())
    assert before == 0 and frozen > 100_000 and unfrozen < frozen / 10, out.stdout
    assert joblog.job_cost((tmp_path / "job.log").read_text()) is not None


def test_gpu_hours_count_the_gpus_each_compute_job_requested(logs):
    gpus = {("train", "cifar10"): 1, ("train", "tinyimagenet200"): 4, ("evaluate", "cifar10"): 1}
    table = report.compute_summary(report.job_costs(logs), lambda st, ds: gpus.get((st, ds), 0)).set_index("stage")
    assert table.loc["train", "jobs"] == 2 and table.loc["train", "wall_hours"] == pytest.approx(2.0)
    assert table.loc["train", "gpu_hours"] == pytest.approx(1 + 4)
    assert table.loc["evaluate", "gpu_hours"] == pytest.approx(2.0)
    assert table.loc["metrics", "gpu_hours"] == 0  # a merge on the host asks for no GPU
    assert table.loc["total", "gpu_hours"] == pytest.approx(7.0) and table.loc["total", "jobs"] == 5


def write_env(path, device, torch_version):
    path.parent.mkdir(parents=True, exist_ok=True)
    env = {"device_name": device, "cuda": "12.4", "git_revision": "abc", "python": "3.11.7",
           "versions": {"torch": torch_version, "part-repro": "0.1.0"}}
    path.write_text(json.dumps({"environment": env}))


def test_recorded_environments_are_grouped_and_counted(tmp_path):
    write_env(tmp_path / "a/seed0/run.json", "NVIDIA H100", "2.5.1")
    write_env(tmp_path / "a/seed1/run.json", "NVIDIA H100", "2.5.1")
    write_env(tmp_path / "a/seed0/eval/aa.json", "NVIDIA H100", "2.5.1")
    write_env(tmp_path / "a/seed0/metrics.json", "ignored: a merge computes nothing", "2.5.1")
    write_env(tmp_path / "b/seed0/run.json", "NVIDIA A100", "2.5.1")
    envs = report.recorded_environments(tmp_path).set_index("device")
    assert set(envs.index) == {"NVIDIA H100", "NVIDIA A100"}
    assert envs.loc["NVIDIA H100", "files"] == "2 × run.json, 1 × eval/*.json"


def test_results_readme_has_grid_main_table_compute_and_links(tmp_path, logs):
    results = tmp_path / "results"
    (results / "tables").mkdir(parents=True)
    (results / "tables" / "main.md").write_text("| method | Natural |\n|---|---|\n| AT | 82.58 ± 0.14 |\n")
    (results / "figures").mkdir()
    (results / "figures" / "tradeoff.png").write_bytes(b"png")
    write_env(results / "cifar10/resnet18/at/seed0/run.json", "NVIDIA H100", "2.5.1")
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.update(datasets={"cifar10": {"arch": "resnet18"}}, variants={"at": cfg["variants"]["at"]}, experiments={})
    cfg["evaluation"]["aa_n_examples"] = 1000
    g = grid.load(cfg)
    command = "snakemake --report results/report.html --configfile configs/x.yaml"
    text = report.results_readme(g, results, logs, lambda stage, dataset: 1, command)
    assert "* datasets: cifar10 (resnet18)" in text and "AutoAttack on 1000 test examples" in text
    assert "| AT | 82.58 ± 0.14 |" in text and "NVIDIA H100" in text
    assert f"```bash\n{command}\n```" in text and "ε-maps" not in text  # no PART variant
    assert "[figures/tradeoff.png](figures/tradeoff.png)" in text
    total = next(line for line in text.splitlines() if line.startswith("| total"))
    assert total.split("|")[2].strip() == "5"  # jobs
    report.write_results_readme(g, results, logs, lambda stage, dataset: 1, command, results / "README.md")
    assert (results / "README.md").read_text() == text


def test_the_report_command_names_the_snakefile_and_config_the_workflow_ran_with(tmp_path):
    """Relative to the workflow's directory where the files lie below it; --config last (it takes every word)."""
    venv = tmp_path / ".venv" / "bin" / "snakemake"
    command = report.report_command(venv, tmp_path / "Snakefile", [tmp_path / "configs" / "demo.yaml"], [],
                                    "results/report.html", tmp_path)
    assert command == ".venv/bin/snakemake --report results/report.html --configfile configs/demo.yaml"
    elsewhere = tmp_path.parent / "checkout" / "Snakefile"
    command = report.report_command("snakemake", elsewhere, [tmp_path / "grid.yaml", tmp_path / "more.yaml"],
                                    ["evaluation={'jobs': 'per_attack'}"], "out/report.html", tmp_path)
    assert shlex.split(command) == ["snakemake", "--report", "out/report.html", "--snakefile", str(elsewhere),
                                    "--configfile", "grid.yaml", "--configfile", "more.yaml",
                                    "--config", "evaluation={'jobs': 'per_attack'}"]


def test_the_readme_states_how_often_each_part_variant_computes_its_eps_maps():
    """From each run's schedule (RunConfig.refreshes_at): before PART epoch 1, then every PART epoch divisible
    by s — the demo's s = 10 over 5 PART epochs computes its maps once."""
    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    lines = report.refresh_lines(grid.load(cfg))
    assert lines == ["* ε-maps on digits: s = 1 over 5 PART epochs: computed 5 times (PART (s = 1), PART-T (s = 1), "
                     "PART-M (s = 1)); s = 10 over 5 PART epochs: computed once, before the first PART epoch "
                     "(PART (s = 10), PART-T (s = 10), PART-M (s = 10))"]
    cfg["run"]["epochs"] = cfg["run"]["warmup_epochs"] + 30  # 30 PART epochs: before PART epochs 1, 10, 20, 30
    assert "s = 10 over 30 PART epochs: computed 4 times" in report.refresh_lines(grid.load(cfg))[0]
    paper = report.refresh_lines(grid.load(yaml.safe_load((ROOT / "config.yaml").read_text())))
    assert len(paper) == 3 and all("s = 10 over 60 PART epochs: computed 7 times" in line for line in paper)


def test_the_rules_that_ask_for_a_gpu_are_training_and_every_evaluation():
    """GPU-hours count every evaluating rule: the per-run job under per_model, the checks, compared checkpoints."""
    per_model = {"evaluation": {"jobs": "per_model"}}
    assert [compute_resource(per_model, r) for r in ("train", "metrics", "evaluate_check", "evaluate_checkpoints")] \
        == ["train", "evaluate", "evaluate", "evaluate"]
    assert compute_resource({"evaluation": {"jobs": "per_attack"}}, "metrics") is None  # a local merge
    assert compute_resource(per_model, "evaluate") == "evaluate"
    assert {compute_resource(per_model, r) for r in ("aggregate", "figure_tradeoff", "prepare_dataset")} == {None}


def test_the_readmes_status_block_states_the_numbers_its_docs_measure():
    """The README's status says what has been run in numbers taken from the docs it links: the coverage range is
    the extremes of docs/statistics.md's PART − base table, and every page it cites exists."""
    root = Path(__file__).parents[1]
    readme = (root / "README.md").read_text()
    status = readme[readme.index("## Status"):readme.index("## Quick start")]
    doc = (root / "docs" / "statistics.md").read_text()
    table = doc[doc.index("**PART − base, paired (the claim's intervals)**"):]
    table = table[:table.index("\n\n", table.index("| seeds"))]
    rows = [line for line in table.splitlines() if line.startswith("| ") and line[2].isdigit()]
    coverage = [float(c) for line in rows for cell in line.split("|")[3:-1]
                for c in cell.replace("*", "").split("/")]
    assert f"between {min(coverage):.3f} and {max(coverage):.3f} of the time" in status
    assert f"across {len(rows) * 4} settings" in status
    for link in re.findall(r"\]\(([^)]+)\)", status):
        assert (root / link).is_file(), link
    assert "Not yet run" in status and "Any GPU run" in status
