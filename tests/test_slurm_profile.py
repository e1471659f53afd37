"""The SLURM profiles without a cluster: they parse, name the keys the plugin knows, keep the rules that
must not need a compute node local, and plan the paper's grid with the intended per-job resources.

The real cluster run (sbatch, scancel, preemption, resume) is .ci/slurm.sh.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SLURM = ROOT / "profiles" / "slurm" / "config.yaml"
SLURM_CI = ROOT / "profiles" / "slurm-ci" / "config.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
REMOTE_RULES = {"train", "evaluate", "evaluate_check"}  # the only rules that need a GPU node under profiles/slurm


def snakemake(*args):
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def planned_jobs(output: str) -> list[dict]:
    """The jobs of a dry run: rule, wildcards and resources of each printed job block."""
    jobs = []
    for block in re.split(r"\n\[[^\]]+\]\n", output):
        rule = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if not rule:
            continue
        wildcards = re.search(r"^\s+wildcards: (.*)$", block, re.M)
        resources = re.search(r"^\s+resources: (.*)$", block, re.M)
        jobs.append({
            "rule": rule[1],
            "wildcards": dict(kv.split("=", 1) for kv in wildcards[1].split(", ")) if wildcards else {},
            "resources": dict(kv.split("=", 1) for kv in resources[1].split(", ")) if resources else {},
        })
    return jobs


@pytest.fixture(scope="module")
def slurm_profile():
    return yaml.safe_load(SLURM.read_text())


@pytest.fixture(scope="module")
def ci_profile():
    return yaml.safe_load(SLURM_CI.read_text())


@pytest.fixture(scope="module")
def cli_help():
    return snakemake("--help")


def test_every_profile_key_is_an_option_of_this_snakemake_and_plugin(slurm_profile, ci_profile, cli_help):
    # A misspelt key (slurm-status-cmd, retry) would otherwise only show up on the cluster.
    for key in [*slurm_profile, *ci_profile]:
        assert f"--{key}" in cli_help, f"profile key {key!r} is not a snakemake option"


def test_slurm_profile_names_the_user_settings_and_the_resilience_settings(slurm_profile):
    assert slurm_profile["executor"] == "slurm"
    assert set(slurm_profile["default-resources"]) == {"slurm_partition", "slurm_account"}
    for rule in REMOTE_RULES:
        assert {"gpu_model", "runtime"} <= set(slurm_profile["set-resources"][rule])
    # A killed training job is resubmitted (retries) or requeued by SLURM, then resumes.
    assert slurm_profile["retries"] >= 2 and slurm_profile["slurm-requeue"] is True
    assert slurm_profile["rerun-incomplete"] is True and slurm_profile["keep-going"] is True
    text = SLURM.read_text()
    assert "USER SETTINGS" in text, "partition/account/GPU model must stay visibly marked as user settings"


def test_job_sizes_have_one_home_the_workflow_config(slurm_profile):
    # set-resources overrides a rule's resources, so setting these here too would silently win over
    # config.yaml's `resources:` (which configs/demo.yaml and the CI config shrink).
    for section in ("default-resources", "set-resources"):
        for rule, resources in slurm_profile[section].items():
            keys = resources if section == "set-resources" else {rule: None}
            assert not {"gpu", "cpus_per_gpu", "cpus_per_task", "mem_mb", "mem"} & set(keys), (section, rule)


def test_ci_profile_only_adds_to_the_cluster_profile(ci_profile):
    # Layered with `--profile profiles/slurm --workflow-profile profiles/slurm-ci`: a key set here replaces
    # the same key of profiles/slurm as a whole, so the resource sections must stay out of it.
    assert not {"default-resources", "set-resources", "executor"} & set(ci_profile)
    assert ci_profile["slurm-status-command"] == "squeue"  # no accounting database on the CI cluster
    assert ci_profile["slurm-init-seconds-before-status-checks"] <= 5
    assert ci_profile["retries"] >= 1  # the scancel test needs one resubmission


@pytest.mark.parametrize("jobs, remote", [("per_attack", REMOTE_RULES), ("per_model", REMOTE_RULES | {"metrics"})])
def test_only_train_and_evaluate_leave_the_submit_host(jobs, remote):
    # Snakemake's own notion (localrules + rules without an action), read through its API in a
    # separate process; `_workflow`/`_localrules` are internal, pinned by snakemake<10 in pyproject.
    # per_attack (profiles/slurm): the per-run merge stays local; per_model: it is the run's evaluation job.
    probe = (
        "import json, sys\n"
        "from pathlib import Path\n"
        "from snakemake.api import SnakemakeApi\n"
        "from snakemake.settings.types import ConfigSettings, ResourceSettings\n"
        "with SnakemakeApi() as api:\n"
        "    config = ConfigSettings(config={'evaluation': {'jobs': sys.argv[3]}})\n"
        "    wf = api.workflow(resource_settings=ResourceSettings(), config_settings=config,\n"
        "                      snakefile=Path(sys.argv[1]), workdir=Path(sys.argv[2]))._workflow\n"
        "    print(json.dumps({r.name: r.name in wf._localrules or r.norun for r in wf.rules}))\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(ROOT / "Snakefile"), str(ROOT), jobs], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    local = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {rule for rule, is_local in local.items() if not is_local} == remote
    assert {"prepare_dataset", "aggregate"} <= {rule for rule, is_local in local.items() if is_local}
    assert local["metrics"] == (jobs == "per_attack")


PARSE_PROBE = (
    "import json, sys\n"
    "from snakemake.cli import main\n"
    "code = 0\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as exit:\n"
    "    code = exit.code\n"
    "print(json.dumps({'exit': code, 'modules': sorted(sys.modules)}))\n")
"""Snakemake in-process, then the modules the parse and the DAG left imported (the last line of stdout)."""


def test_full_grid_dry_run_plans_every_job_with_its_resources_and_imports_no_torch():
    """The one dry run of the paper's grid: job counts per rule, per-job resources from the SLURM profile,
    and a parse (paid again by every SLURM job) that imports neither torch, matplotlib nor seaborn."""
    proc = subprocess.run([sys.executable, "-c", PARSE_PROBE, "-n", "--workflow-profile", "profiles/slurm",
                           "--snakefile", str(ROOT / "Snakefile"), "--directory", str(ROOT)],
                          cwd=ROOT, capture_output=True, text=True)
    probe = json.loads(proc.stdout.strip().splitlines()[-1])
    out = proc.stdout + proc.stderr
    assert probe["exit"] == 0, out
    assert "workflow specific profile profiles/slurm" in out
    heavy = [m for m in probe["modules"] if m.split(".")[0] in ("torch", "matplotlib", "seaborn")]
    assert heavy == [], f"the Snakefile parse imported {heavy[:5]}"
    assert {m for m in probe["modules"] if m.split(".")[0] == "part"} <= {"part", "part.base", "part.base.grid", "part.base.config",
                                                                          "part.base.vocabulary", "part.base.rundir",
                                                                          "part.base.files", "part.base.errors"}  # the standard library only
    jobs = planned_jobs(out)
    counts = {rule: sum(j["rule"] == rule for j in jobs) for rule in {j["rule"] for j in jobs}}
    runs, attacks = 3 * 9 * 3, 5  # natural, PGD-20, MMA, AA and the release's AA
    # config.yaml's experiments add CIFAR-10 runs (seed 0) evaluated with natural + PGD-20 only:
    # 4 quadrants + 2 CAM methods + 3 ε_low + 3 s + 6 release switches (one each, then all: the preset)
    # + 1 MMA generator; the rest reuse main-table runs.
    experiment_runs, experiment_attacks = 4 + 2 + 3 + 3 + 6 + 1, 2
    assert counts["train"] == runs + experiment_runs == 100
    assert counts["evaluate"] == runs * attacks + experiment_runs * experiment_attacks == 443
    assert counts["metrics"] == runs + experiment_runs and counts["prepare_dataset"] == 3 and counts["aggregate"] == 1
    experiments = ["quadrant", "cam_methods", "eps_low_sweep", "s_sweep", "release_switches", "ae_generator"]
    assert all(counts[f"experiment_{name}"] == 1 for name in experiments)
    # the robustness curve and the sanity checks of every main-table variant's seed-0 model, their two tables
    assert counts["evaluate_check"] == 2 * 3 * 9 and counts["robustness_curve_table"] == counts["sanity_table"] == 1
    assert counts["figure_robustness_curve"] == 3
    # one trade-off, claim and ε-share figure for the grid; training curves and a gallery per dataset
    assert counts["figure_tradeoff"] == counts["figure_claim"] == counts["figure_eps_share"] == 1
    assert counts["figure_training_curves"] == counts["figure_gallery"] == 3
    assert counts["fingerprint"] == 1  # the sources that made the outputs, recorded last
    assert len(jobs) == 583 + runs + 2 * 3 * 9 + 2 + 3 + 1  # the release's AA; the checks: their jobs, tables and
    # curve figures; the fingerprint
    for job in jobs:
        if job["rule"] not in REMOTE_RULES:
            continue
        res = job["resources"]
        # from config.yaml `resources:`
        assert (res["gpu"], res["cpus_per_gpu"], res["mem_mb"]) == ("1", "8", "32000"), job
        # from the profile (overrides config.yaml's runtime), scaled by model and, for evaluation, attack
        wide = job["wildcards"]["arch"] == "wrn34_10"
        if job["rule"] == "train":
            assert res["runtime"] == ("1440" if wide else "720"), job
        elif job["rule"] == "evaluate_check":
            assert res["runtime"] == str({"curve": 240, "sanity": 720}[job["wildcards"]["check"]] * (4 if wide else 1))
        else:
            base = {"natural": 30, "pgd20": 120, "mma": 240, "aa": 720, "aa_release": 480}[job["wildcards"]["attack"]]
            assert res["runtime"] == str(base * (4 if wide else 1)), job


def test_ci_profile_layers_on_the_slurm_profile(tmp_path):
    out = snakemake("-n", "--profile", "profiles/slurm", "--workflow-profile", "profiles/slurm-ci",
                    "--configfile", "configs/demo.yaml", "--directory", str(tmp_path),
                    "--snakefile", str(ROOT / "Snakefile"))
    assert "Using profiles profiles/slurm and workflow specific profile profiles/slurm-ci" in out
    train = [j for j in planned_jobs(out) if j["rule"] == "train"]
    assert len(train) == 33  # 18 main-table runs + 15 experiment runs
    # gpu: 0 from the demo config (no --gpus for the plugin); runtime still from profiles/slurm
    assert all(j["resources"]["gpu"] == "0" and j["resources"]["runtime"] == "720" for j in train)
    # profiles/slurm cuts evaluation per attack: 18 runs x 5 attacks (both AutoAttacks) + 15 experiment runs x 2,
    # merged locally
    assert sum(j["rule"] == "evaluate" for j in planned_jobs(out)) == 18 * 5 + 15 * 2


def test_ci_script_is_valid_bash_and_always_tears_down():
    script = ROOT / ".ci" / "slurm.sh"
    assert script.stat().st_mode & 0o111, ".ci/slurm.sh must be executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    assert "trap cleanup EXIT" in text
    for daemon in ("slurmd", "slurmctld", "munged"):
        assert f"stop_pidfile {daemon} " in text
