"""The workflow itself killed: SIGKILL the whole Snakemake process group during training and again during
evaluation, rerun the documented command, and get the tables of an uninterrupted run — byte for byte, which
also shows that the same grid gives the same numbers twice on one machine."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from conftest import tiny_grid

from part.evaluation.results import merge_metrics
from part.workflow.joblog import job_cost, job_log

ROOT = Path(__file__).resolve().parents[1]
TABLES = ["main.csv", "main.md", "per_seed.csv", "summary.csv", "claim_verdicts.csv", "claim_verdicts.md"]


def wrapper(workdir: Path, args: list[str], name: str) -> subprocess.Popen:
    """The documented command (`make demo` runs it): unlock a stale lock, then run the workflow; its output
    goes to ``workdir/name.log`` (a pipe would fill and stall Snakemake)."""
    with open(workdir / f"{name}.log", "w") as out:
        return subprocess.Popen([sys.executable, "-m", "part.workflow.workflow_lock", *args], cwd=workdir, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def output(workdir: Path, name: str) -> str:
    return (workdir / f"{name}.log").read_text()


def kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """SIGKILL the workflow's whole process group (Snakemake and its jobs) once ``ready()`` is true."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the workflow ended before the kill point"
        assert time.monotonic() < deadline, "the kill point never came"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def training_epoch_logged(workdir: Path) -> bool:
    logs = list((workdir / "logs" / "train").rglob("*.log")) if (workdir / "logs" / "train").exists() else []
    return any("epoch   2/" in p.read_text() for p in logs)


def evaluating(workdir: Path) -> bool:
    """An evaluation job has started: one per run (logs/metrics, evaluation.jobs: per_model) or per attack."""
    return any((workdir / "logs" / rule).exists() and any((workdir / "logs" / rule).rglob("*.log"))
               for rule in ("metrics", "evaluate"))


@pytest.mark.slow
def test_killed_workflow_reruns_with_the_same_command_to_the_same_tables(tmp_path, tiny_workflow):
    uninterrupted, args = tiny_workflow
    killed = tmp_path / "killed"
    tiny_grid(killed)
    kill_when(wrapper(killed, args, "first"), lambda: training_epoch_logged(killed))
    assert list((killed / ".snakemake" / "locks").glob("*.lock")), "a killed Snakemake leaves its lock"
    plain = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=killed, capture_output=True, text=True,
                           timeout=600)
    assert plain.returncode != 0 and "LockException" in plain.stdout + plain.stderr  # what a user hit before
    kill_when(wrapper(killed, args, "second"), lambda: evaluating(killed))
    assert "stale Snakemake lock" in output(killed, "second")
    assert wrapper(killed, args, "third").wait(timeout=900) == 0, output(killed, "third")
    assert "stale Snakemake lock" in output(killed, "third")
    resumed = [p.read_text() for p in (killed / "logs" / "train").rglob("*.log")]
    assert any("resuming" in text for text in resumed), "the killed training run resumed from its checkpoint"

    for name in TABLES:
        ours, theirs = (d / "results" / "tables" / name for d in (killed, uninterrupted))
        assert ours.read_bytes() == theirs.read_bytes(), name
    assert not list((killed / "results").rglob(".*.tmp"))


def planned_jobs(dry_run: str) -> dict[str, list[tuple[list[str], list[str]]]]:
    """The jobs of a ``snakemake -n`` printout by rule: (input files, output files) of each."""
    jobs: dict[str, list[tuple[list[str], list[str]]]] = {}
    rule = None
    for line in dry_run.splitlines():
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split()[1].rstrip(":")
            jobs.setdefault(rule, []).append(([], []))
        elif rule and line.startswith(("    input: ", "    output: ")):
            key, _, value = line.strip().partition(": ")
            jobs[rule][-1][0 if key == "input" else 1].extend(value.split(", "))
        elif not line.startswith("    "):
            rule = None
    return jobs


def test_every_declared_output_is_a_target_of_the_default_rule(tmp_path):
    """Snakemake rebuilds a missing file only if a job that runs asks for it: an intermediate deleted behind an
    up-to-date README stayed missing. So every file of every job must be an input of `rule all` itself."""
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--forceall", "--cores", "1", "--snakefile",
                           str(ROOT / "Snakefile"), "--configfile", str(ROOT / "configs" / "demo.yaml")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    jobs = planned_jobs(proc.stdout)
    (targets, _), = jobs.pop("all")
    outputs = [path for rule_jobs in jobs.values() for _, out in rule_jobs for path in out]
    assert len(jobs) >= 15 and len(outputs) > 350  # every kind of job of the demo grid was seen
    assert sorted(set(outputs) - set(targets)) == []
    assert sorted(set(targets) - set(outputs)) == []


def run_snakemake(workdir: Path, args: list[str], *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", *extra, *args], cwd=workdir, capture_output=True,
                          text=True, timeout=900)


@pytest.fixture
def finished_grid(tiny_workflow):
    """The session's finished tiny grid (conftest.py), copied afresh for each test that changes it."""
    workdir, args = tiny_workflow

    def copy(to: Path) -> tuple[Path, list[str]]:
        shutil.copytree(workdir, to, symlinks=True)
        return to, args

    return copy


def summary_files(results: Path) -> list[Path]:
    """The tables, figures and experiment files of a results directory (README.md's timings vary by run)."""
    return sorted(p for sub in ("tables", "figures", "experiments") for p in (results / sub).rglob("*") if p.is_file())


@pytest.mark.slow
def test_deleted_or_stale_tables_and_figures_are_rebuilt_by_the_plain_command(finished_grid, tmp_path):
    """A table, figure, experiment file or README deleted behind the others, alone or all together, is planned
    and rebuilt by the plain command, to the bytes of the first run; so are tables older than a re-merged run.
    (That every other declared file is a target too: test_every_declared_output_is_a_target_of_the_default_rule.)"""
    workdir, args = finished_grid(tmp_path / "grid")
    results = workdir / "results"
    before = {p: p.read_bytes() for p in summary_files(results)}
    # 9 main tables and the curve's and checks' 4; trade-off, training curves, ε-share, claim, gallery, robustness
    # curve (PNG + PDF); the experiment's 6
    assert len(before) == 9 + 4 + 2 * 6 + 6
    for path in [results / "tables/main.md", results / "figures/claim.pdf", results / "experiments/pair/pair.csv",
                 results / "README.md"]:  # one in turn: the plain command plans its rebuild
        path.rename(tmp_path / "aside")
        plan = run_snakemake(workdir, args, "-n")
        assert plan.returncode == 0 and "Nothing to be done" not in plan.stdout, path
        assert str(path.relative_to(workdir)) in plan.stdout, path
        (tmp_path / "aside").rename(path)
    for path in before:
        path.unlink()
    (results / "README.md").unlink()
    rerun = run_snakemake(workdir, args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert {p: p.read_bytes() for p in summary_files(results)} == before  # the same bytes as the first run
    assert (results / "README.md").is_file()
    # a run merged again (new "created" time) makes the tables stale: rebuilt, to the same bytes. (A mere touch
    # is no change to Snakemake, which compares small inputs' checksums with those recorded.)
    merge_metrics(results / "digits/small_cnn/at/seed0")
    rerun = run_snakemake(workdir, args)
    assert rerun.returncode == 0 and "rule aggregate:" in rerun.stdout + rerun.stderr
    assert {p: p.read_bytes() for p in summary_files(results)} == before
    assert "Nothing to be done" in run_snakemake(workdir, args, "-n").stdout


def test_a_failed_prepare_job_writes_its_error_to_its_log(tmp_path):
    """The rule's log:, where SLURM users are pointed, holds the error, not only the Snakemake console."""
    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    cfg["datasets"] = {"fashion_mnist": {"arch": "small_cnn"}}
    cfg["data"]["mirror"] = str(tmp_path / "no-mirror")
    cfg["experiments"] = {}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    args = ["--cores", "1", "--snakefile", str(ROOT / "Snakefile"), "--configfile", "grid.yaml"]
    proc = run_snakemake(tmp_path, args, "data/prepared/fashion_mnist.pt")
    assert proc.returncode != 0
    log = (tmp_path / "logs" / "prepare" / "fashion_mnist.log").read_text()
    assert f"[part] job failed: part.data.sources.DownloadError: mirror {tmp_path / 'no-mirror'}: no such directory" in log
    assert "Traceback" in log


@pytest.mark.slow
def test_failed_evaluate_and_aggregate_jobs_write_their_errors_to_their_logs(finished_grid, tmp_path):
    workdir, args = finished_grid(tmp_path / "grid")
    metrics = Path("results/digits/small_cnn/part_s1/seed0/metrics.json")
    (workdir / metrics).write_text((workdir / metrics).read_text()[:200])  # newer than the tables: they are rebuilt
    assert run_snakemake(workdir, args).returncode != 0
    log = (workdir / "logs/aggregate.log").read_text()
    assert f"[part] job failed: ValueError: {metrics}: not valid JSON" in log and "Traceback" in log
    model = Path("results/digits/small_cnn/at/seed0/model.pt")
    (workdir / model).write_bytes(os.urandom(4096))  # newer than its evaluations: they run again
    assert run_snakemake(workdir, args, "--keep-going").returncode != 0
    log = (workdir / "logs/metrics/digits/small_cnn/at/seed0.log").read_text()  # the run's job (evaluation.jobs)
    assert f"[part] job failed: ValueError: {model}: cannot be read as a torch file" in log


def test_a_job_stopped_by_sigterm_says_so_in_its_log(tmp_path):
    """SLURM's time limit or scancel: the log tells a stop from a failure (and from a job still running)."""
    log = tmp_path / "logs" / "evaluate" / "job.log"
    script = textwrap.dedent(f"""
        import time
        from part.training import distributed
        from part.workflow.joblog import job_log
        distributed.exit_on_sigterm()
        with job_log({str(log)!r}):
            print("working", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not (log.is_file() and "working" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    working, stopped, cost = log.read_text().splitlines()
    assert (working, stopped) == ("working", "[part] job stopped by SIGTERM (exit code 143)")
    cpu, wall = job_cost(cost)  # CPU may exceed wall: torch's import runs on several threads
    assert cost.startswith("[part] job cost: ") and 0 < cpu < 60 and 0 < wall < 60, cost


def test_a_job_sweeps_the_temporaries_a_killed_attempt_left_beside_its_outputs(tmp_path):
    """A table or figure job killed inside ``atomic_write`` leaves ``.NAME.xxxxxxxx.tmp``; the rerun, the outputs'
    only writer, deletes it before it writes, and leaves other files' temporaries alone."""
    figures = tmp_path / "results" / "figures"
    figures.mkdir(parents=True)
    stale = figures / ".tradeoff.pdf.shnsh16d.tmp"
    foreign = figures / ".claim.pdf.abcdefgh.tmp"
    for path in (stale, foreign):
        path.write_bytes(b"%PDF-1.4 half")
    with job_log(tmp_path / "job.log", owns=[figures / "tradeoff.png", figures / "tradeoff.pdf"]):
        assert not stale.exists() and foreign.exists()


def test_a_job_log_ends_with_the_cpu_time_of_its_whole_process(tmp_path):
    """What the job costs, start-up included; a resumed job appends, and its attempts add up."""
    log = tmp_path / "job.log"
    script = textwrap.dedent(f"""
        import time
        from part.workflow.joblog import job_log
        def burn(seconds):
            end = time.process_time() + seconds
            while time.process_time() < end:
                pass
        burn(0.4)  # before the log opens: an import, say
        with job_log({str(log)!r}, "a"):
            burn(0.4)
    """)
    for attempt in range(2):
        subprocess.run([sys.executable, "-c", script], check=True)
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and all(line.startswith("[part] job cost: ") for line in lines)
    cpu, wall = job_cost(log.read_text())
    assert 1.6 <= cpu < 1.6 + 2 * 1.0 and cpu <= wall, lines  # + the interpreter's own start


@contextlib.contextmanager
def full_disk(directory: Path) -> Iterator[Path]:
    """``directory`` on a 256 kB tmpfs filled up but for a few bytes; yields the filler, whose removal frees it."""
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(directory)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    filler = directory / "filler"
    try:
        with open(filler, "wb", buffering=0) as f, contextlib.suppress(OSError):  # ENOSPC: full
            while True:
                f.write(b"\0" * 4096)
        yield filler
    finally:
        subprocess.run(["umount", "--lazy", str(directory)], check=True)


@pytest.mark.slow
def test_tables_failed_on_a_full_disk_are_rebuilt_once_space_is_freed(finished_grid, tmp_path):
    """The disk full while the table jobs write (whichever of them the scheduler starts first), Snakemake removed
    their outputs; after space was freed the same command once said "Nothing to be done". It rebuilds the tables, to
    the bytes of the first run."""
    workdir, args = finished_grid(tmp_path / "grid")
    tables = workdir / "results" / "tables"
    before = {p.name: p.read_bytes() for p in tables.iterdir()}
    shutil.rmtree(tables)
    with full_disk(tables) as filler:
        failed = run_snakemake(workdir, args)
        assert failed.returncode != 0
        said_full = [log.name for log in (workdir / "logs").rglob("*.log") if "the disk is full" in log.read_text()]
        assert said_full, failed.stdout + failed.stderr
        assert [p.name for p in tables.iterdir()] == ["filler"]  # no table, no temporary
        filler.unlink()  # space freed
        rerun = run_snakemake(workdir, args)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert {p.name: p.read_bytes() for p in tables.iterdir()} == before
