"""One writer per run directory and per evaluation output (part.base.lock), with real processes: two starts at
once, a second start mid-run, a stopped and a SIGKILLed holder, a holder on another host whose lease ran out.

A holder is made to wait at a gate (a file the test creates) after its first epoch or before its attack, so
that every meeting of two writers happens for certain, whatever the machine's speed."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from part.base import lock
from part.base.rundir import RunPaths, read_log
from part.cli import main

FINISHED = {"model.pt", "run.json", "log.jsonl", "config.json"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes share the machine's cores
GATED = textwrap.dedent("""
    import os, sys, time
    from part import cli
    from part.evaluation import evaluate
    from part.training import train

    def gated(original, opens_after):
        def wait_then_run(*args):
            if opens_after(*args):
                print("waiting", flush=True)
                while not os.path.exists({gate!r}):
                    time.sleep(0.05)
            return original(*args)
        return wait_then_run

    train.run_epoch = gated(train.run_epoch, lambda engine, epoch: epoch > 0)
    evaluate._evaluate_one = gated(evaluate._evaluate_one, lambda *_: True)
    cli.main(sys.argv[1:])
""")


def settings(digits_dir: Path, epochs: int = 3) -> dict:
    """AT with one-step attacks: about 0.6 s an epoch."""
    return {"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu", "method": "at", "epochs": epochs,
            "attack": {"steps": 1}}


@pytest.fixture
def run_config(digits_dir, tmp_path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(settings(digits_dir)))
    return path


def start_gated(gate: Path, *argv: str) -> subprocess.Popen:
    """``part ARGV`` in its own process, waiting at ``gate`` after its first epoch / before each attack."""
    return subprocess.Popen([sys.executable, "-c", GATED.format(gate=str(gate)), *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def part(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "part", *argv], capture_output=True, text=True, env=ENV, timeout=120)


def wait_at_gate(proc: subprocess.Popen) -> None:
    for line in proc.stdout:
        if line.strip() == "waiting":
            return
    raise AssertionError(f"exited with {proc.wait()} before its gate: {proc.stderr.read()}")


def held_by(pid: int) -> str:
    return f"host {socket.gethostname()}, PID {pid}, started "


def assert_finished(out: Path) -> None:
    """A run whose one writer finished: every epoch once and in order, no checkpoint, no lock."""
    assert [r["epoch"] for r in read_log(out)] == [1, 2, 3]
    assert {p.name for p in out.iterdir()} == FINISHED


def test_two_writers_started_together_one_is_refused_with_who_holds_it(run_config, tmp_path):
    out, gate = tmp_path / "run", tmp_path / "gate"
    procs = [start_gated(gate, "train", "--config", str(run_config), "--out", str(out)) for _ in range(2)]
    deadline = time.time() + 120
    while all(p.poll() is None for p in procs) and time.time() < deadline:  # the holder waits at the gate
        time.sleep(0.05)
    gate.touch()
    (winner,) = [p for p in procs if p.poll() is None]
    (loser,) = [p for p in procs if p is not winner]
    assert winner.wait(timeout=120) == 0 and loser.returncode == 2
    refusal = loser.stderr.read()
    assert "part train is already writing here" in refusal and held_by(winner.pid) in refusal
    assert "Traceback" not in refusal
    assert_finished(out)


def test_a_second_start_mid_run_is_refused_and_the_first_finishes_consistently(run_config, tmp_path):
    out, gate = tmp_path / "run", tmp_path / "gate"
    first = start_gated(gate, "train", "--config", str(run_config), "--out", str(out))
    wait_at_gate(first)
    before = {name: (out / name).read_bytes() for name in ("log.jsonl", "checkpoint.pt", "config.json")}
    second = part("train", "--config", str(run_config), "--out", str(out))
    assert second.returncode == 2 and held_by(first.pid) in second.stderr, second.stderr
    assert {name: (out / name).read_bytes() for name in before} == before  # the refused writer wrote nothing
    gate.touch()
    assert first.wait(timeout=120) == 0, first.stderr.read()
    assert_finished(out)


def test_a_stopped_holder_removes_its_lock_and_a_killed_ones_is_taken_over(run_config, tmp_path):
    out, gate = tmp_path / "run", tmp_path / "gate"
    args = ("train", "--config", str(run_config), "--out", str(out))
    stopped = start_gated(gate, *args)
    wait_at_gate(stopped)
    stopped.send_signal(signal.SIGTERM)  # SLURM's time limit: a normal exit, which removes the lock
    assert stopped.wait(timeout=60) == 143 and not RunPaths(out).lock.exists()
    killed = start_gated(gate, *args)  # resumes after epoch 1 and waits before epoch 2
    wait_at_gate(killed)
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert json.loads(RunPaths(out).lock.read_text())["pid"] == killed.pid  # left behind by the dead holder
    resumed = part(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout and "after epoch 1/3" in resumed.stdout
    assert_finished(out)


def foreign_lock(path: Path, renewed_seconds_ago: float, lease: float = 60.0) -> None:
    """The lock of a writer on another host, last renewed ``renewed_seconds_ago``."""
    stamp = lock._stamp(time.time() - renewed_seconds_ago)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"host": "node7", "pid": 4242, "started": stamp, "renewed": stamp,
                                "lease_seconds": lease, "purpose": "part train", "token": "0" * 32}))


def test_another_hosts_lock_is_respected_while_its_lease_runs_and_taken_over_after(digits_dir, tmp_path, capsys):
    out = tmp_path / "run"
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(settings(digits_dir, epochs=1)))
    foreign_lock(RunPaths(out).lock, renewed_seconds_ago=30)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "host node7, PID 4242" in err and "lease of 60 s" in err
    assert {p.name for p in out.iterdir()} == {".lock"}  # nothing written beside another host's writer
    foreign_lock(RunPaths(out).lock, renewed_seconds_ago=61)
    assert part("train", "--config", str(path), "--out", str(out)).returncode == 0
    assert {p.name for p in out.iterdir()} == FINISHED


def test_an_evaluation_is_refused_beside_one_of_the_same_attack_not_beside_another(run_config, tmp_path, capsys):
    out, gate = tmp_path / "run", tmp_path / "gate"
    assert part("train", "--config", str(run_config), "--out", str(out)).returncode == 0
    holder = start_gated(gate, "evaluate", "--run", str(out), "--attacks", "pgd20", "--n-examples", "50")
    wait_at_gate(holder)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--run", str(out), "--attacks", "natural,pgd20", "--n-examples", "50"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "part evaluate of pgd20 (last weights)" in err and held_by(holder.pid) in err
    assert not (out / "eval" / "natural.json").exists()  # every lock is taken before any attack runs
    main(["evaluate", "--run", str(out), "--attacks", "natural", "--n-examples", "50", "--no-merge"])
    gate.touch()
    assert holder.wait(timeout=120) == 0, holder.stderr.read()
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["attacks"]) == ["natural", "pgd20"]
    assert not any(RunPaths(out).eval_lock("last", attack).exists() for attack in metrics["attacks"])


TAKE_OVER = textwrap.dedent("""
    import os, pathlib, sys, time
    from part.base import lock
    path, barrier, contenders = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), int(sys.argv[3])
    (barrier / f"ready.{os.getpid()}").touch()  # started and imported: only the lock is left to do
    deadline = time.monotonic() + 300
    while len(ready := list(barrier.glob("ready.*"))) < contenders:
        if time.monotonic() > deadline:
            sys.exit("the other contenders never came")
        time.sleep(0.01)
    # every contender computes the same instant from the same files: half a second after the last one was ready
    time.sleep(max(0.0, max(p.stat().st_mtime for p in ready) + 0.5 - time.time()))
    try:
        with lock.held(path, "contender"):
            print("held", flush=True)
            sys.stdin.read()  # hold until the test closes stdin
    except lock.Locked:
        print("refused", flush=True)
""")


def test_a_dead_holders_lock_goes_to_exactly_one_of_many_contenders(tmp_path):
    """Six processes find the lock of a dead holder at once: one takes it over, the others are refused. They
    try together however slowly each one starts: a barrier of files (each writes ready.PID once imported, and
    waits for all six) sets their common instant, rather than a fixed one that a slow start could miss."""
    path, barrier = tmp_path / ".lock", tmp_path / "barrier"
    barrier.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "started": lock._stamp(time.time()),
                                "renewed": lock._stamp(time.time()), "lease_seconds": 600.0, "purpose": "part train",
                                "token": "0" * 32}))
    procs = [subprocess.Popen([sys.executable, "-c", TAKE_OVER, str(path), str(barrier), "6"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(6)]
    outcomes = [p.stdout.readline().strip() for p in procs]
    for p in procs:
        p.stdin.close()
        p.wait(timeout=120)
    assert sorted(outcomes) == ["held"] + ["refused"] * 5
    assert not path.exists() and not list(tmp_path.glob(".lock.*"))


def test_a_live_holder_renews_its_lease(tmp_path):
    """Seen from another host, where only the lease tells a live holder from a dead one, the first record
    runs out after its lease and the renewed one does not. Polling rather than one fixed sleep: a stalled
    machine only delays the renewal the test waits for."""
    path, lease = tmp_path / ".lock", 4.0
    elsewhere = lambda record: {**record, "host": "another-host"}  # noqa: E731
    with lock.held(path, "part train", lease=lease):
        first = json.loads(path.read_text())
        deadline = time.time() + 30
        while lock.stale_reason(elsewhere(first)) is None and time.time() < deadline:
            time.sleep(0.1)
        assert lock.stale_reason(elsewhere(first)) is not None, "the first record never ran out"
        while lock.stale_reason(elsewhere(record := json.loads(path.read_text()))) and time.time() < deadline:
            time.sleep(0.05)
        assert record["renewed"] > first["renewed"] and lock.stale_reason(elsewhere(record)) is None
        with pytest.raises(lock.Locked, match=f"PID {os.getpid()}"):
            with lock.held(path, "part train"):
                pass
    assert not path.exists()


def test_a_lock_without_a_record_counts_from_its_files_age(tmp_path):
    """A holder killed between creating its lock and writing into it leaves an empty file."""
    path = tmp_path / ".lock"
    path.write_text("")
    with pytest.raises(lock.Locked, match="not a lock record this pipeline wrote"):
        with lock.held(path, "part train", lease=60):
            pass
    os.utime(path, (time.time() - 61, time.time() - 61))
    with lock.held(path, "part train", lease=60):
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_the_lease_is_configurable(monkeypatch):
    monkeypatch.setenv(lock.LEASE_ENV, "30")
    assert lock.lease_seconds() == 30.0
    monkeypatch.setenv(lock.LEASE_ENV, "soon")
    with pytest.raises(ValueError, match="PART_LOCK_LEASE='soon'"):
        lock.lease_seconds()


FOREIGN_RECORDS = {
    "valid JSON, keys missing": b'{"renewed": "2026-01-01T00:00:00.000+00:00"}',
    "lease a string": b'{"host": "h", "pid": 1, "started": "s", "renewed": "2026-01-01T00:00:00+00:00", "purpose": "p", '
                      b'"lease_seconds": "60"}',
    "lease null": b'{"host": "h", "pid": 1, "started": "s", "renewed": "2026-01-01T00:00:00+00:00", "purpose": "p", '
                  b'"lease_seconds": null}',
    "lease infinite": b'{"host": "h", "pid": 1, "started": "s", "renewed": "2026-01-01T00:00:00+00:00", "purpose": "p", '
                      b'"lease_seconds": Infinity}',
    "pid true": b'{"host": "h", "pid": true, "started": "s", "renewed": "2026-01-01T00:00:00+00:00", "purpose": "p", '
                b'"lease_seconds": 60}',
    "renewed a number": b'{"host": "h", "pid": 1, "started": "s", "renewed": 5, "purpose": "p", "lease_seconds": 60}',
    "pid negative": b'{"host": "h", "pid": -1, "started": "s", "renewed": "2026-01-01T00:00:00+00:00", "purpose": "p", '
                    b'"lease_seconds": 60}',
    "pid beyond any": b'{"host": "h", "pid": 100000000000000000000, "started": "s", "renewed": "2026-01-01T00:00:00+00:00", '
                      b'"purpose": "p", "lease_seconds": 60}',
    "renewed in the year 9999": b'{"host": "h", "pid": 1, "started": "s", "renewed": "9999-12-31T23:59:59+00:00", '
                                b'"purpose": "p", "lease_seconds": 60}',
    "a JSON string": b'"locked"',
    "garbage bytes": b"\x00\xff\xfe lock \x80",
}


@pytest.mark.parametrize("text", FOREIGN_RECORDS.values(), ids=FOREIGN_RECORDS)
def test_a_lock_file_this_code_did_not_write_is_stale_by_its_file_time_never_a_crash(text, tmp_path):
    """Refused while younger than the lease (saying which file to delete), taken over once older."""
    path = tmp_path / ".lock"
    path.write_bytes(text.replace(b'"host": "h"', f'"host": "{socket.gethostname()}"'.encode()))  # PIDs of this host
    with pytest.raises(lock.Locked, match=f"not a lock record this pipeline wrote.*delete {path}"):
        with lock.held(path, "part train", lease=60):
            pass
    os.utime(path, (time.time() - 61, time.time() - 61))
    with lock.held(path, "part train", lease=60):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not path.exists()


def test_a_refusal_says_which_file_to_delete_when_the_holder_is_gone(tmp_path):
    path = tmp_path / "run" / ".lock"
    with lock.held(path, "part train", lease=60):
        with pytest.raises(lock.Locked) as refused:
            with lock.held(path, "part train"):
                pass
    message = str(refused.value)
    assert f"PID {os.getpid()} on host {socket.gethostname()} is gone" in message and f"delete {path}" in message
    assert "\n" not in message


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e300", "0", "-3", "", "1e9"])
def test_a_lease_that_is_not_a_finite_positive_number_is_refused(value, monkeypatch):
    monkeypatch.setenv(lock.LEASE_ENV, value)
    if value == "":  # unset in effect: the default
        assert lock.lease_seconds() == lock.DEFAULT_LEASE
        return
    with pytest.raises(ValueError, match=f"PART_LOCK_LEASE='{value}': expected the lock's lease in seconds"):
        lock.lease_seconds()


def test_a_writer_leaves_no_directory_it_created_and_wrote_nothing_into(tmp_path):
    """The lock's directories are created for it; when it is released they go again if nothing else was written
    there (a command refused after taking it leaves the directory as it found it), and only those it made."""
    path = tmp_path / "a" / "b" / ".lock"
    with lock.held(path, "part train", lease=60):
        pass
    assert not (tmp_path / "a").exists()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "keep").write_text("")
    with lock.held(path, "part train", lease=60):
        (path.parent / "written").write_text("")
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == ["b", "keep", "written"]
