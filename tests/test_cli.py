import json
import os
import signal
import subprocess
import sys
import time

import pytest

from part.cli import main
from part.workflow.workflow_lock import stale_locks


def test_prepare_then_train_from_the_command_line(tmp_path, capsys):
    main(["prepare", "--dataset", "digits", "--out", str(tmp_path / "prepared")])
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"dataset: digits\ndata_dir: {tmp_path / 'prepared'}\ndevice: cpu\nmethod: part\n")
    main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--set", "epochs=2",
          "--set", "warmup_epochs=1", "--set", "attack.steps=2"])
    out = capsys.readouterr().out
    assert "epoch   2/2 part" in out and "refresh" in out
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["config"]["epochs"] == 2 and info["config"]["attack"]["steps"] == 2


def test_bad_config_exits_with_the_key_named(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("dataset: digits\nattack: {eps: 4/255}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "run.yaml: key 'attack.eps_low'" in err and "expected eps_low <= eps" in err
    assert not (tmp_path / "run").exists()


def test_malformed_override_is_rejected(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--config", str(tmp_path / "x.yaml"), "--out", str(tmp_path), "--set", "epochs"])
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_python_dash_m_part_is_the_same_cli(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "part", "train", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--config" in proc.stdout


def test_a_live_workflow_keeps_its_lock_and_a_dead_one_does_not(tmp_path):
    (tmp_path / ".snakemake" / "locks").mkdir(parents=True)
    lock = tmp_path / ".snakemake" / "locks" / "0.input.lock"
    lock.write_text("")
    assert stale_locks(tmp_path) == [lock]  # nothing alive here: stale
    (tmp_path / "snakemake").write_text("import time\ntime.sleep(60)\n")
    live = subprocess.Popen([sys.executable, str(tmp_path / "snakemake")], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 50  # within the child's minute of sleep; a loaded machine starts it late
        while stale_locks(tmp_path) and time.monotonic() < deadline:  # until /proc shows the new process
            time.sleep(0.05)
        assert stale_locks(tmp_path) == []
    finally:
        live.kill()
        live.wait()
    assert stale_locks(tmp_path) == [lock]


def test_ctrl_c_on_the_workflow_wrapper_waits_for_snakemake_and_says_how_to_continue(tmp_path):
    """Ctrl-C signals the terminal's whole process group: Snakemake stops its job and removes its lock, and the
    wrapper, instead of a raw KeyboardInterrupt, waits for that and exits 130 with a line of advice."""
    (tmp_path / "Snakefile").write_text('rule all:\n    output: "done"\n    shell: "touch started; sleep 60; touch {output}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "part.workflow.workflow_lock", "--cores", "1"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "KeyboardInterrupt" not in err and "Traceback" not in err
    assert err.strip().endswith("[part] interrupted: run the same command again to continue (finished jobs are kept)")
    assert not (tmp_path / "done").exists() and not list((tmp_path / ".snakemake" / "locks").glob("*"))
