"""Faults a hostile user or a cluster produces, injected for real: SIGKILLs mid-write, corrupted and foreign
files, a full disk, bad inputs. Each must end in a clear message (exit 2) and leave nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from part import config, files
from part.cli import main
from part.data import load_prepared
from part.evaluate import evaluate
from part.models import build_model
from part.results import file_sha256, merge_metrics
from part.torchfiles import load_torch, save_torch
from part.train import train

ROOT = Path(__file__).resolve().parents[1]


def digits_run(digits_dir: Path, **overrides) -> config.RunConfig:
    raw = {"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu", "method": "part", "epochs": 2,
           "warmup_epochs": 1, "attack": {"steps": 2}}
    return config.from_dict(config.deep_merge(raw, overrides))


def write_yaml(path: Path, cfg: config.RunConfig) -> Path:
    path.write_text(json.dumps({k: v for k, v in cfg.to_dict().items()}))
    return path


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exit_info:
        main(list(argv))
    return exit_info.value.code, capsys.readouterr().err


def killed_mid_write(target: Path) -> Path:
    """SIGKILL a process while files.atomic_write is writing ``target``; returns the temporary it left."""
    script = textwrap.dedent(f"""
        import time
        from part import files
        def slow(tmp):
            tmp.write_text("half")
            print("writing", flush=True)
            time.sleep(60)
        files.atomic_write({str(target)!r}, slow)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = sorted(target.parent.glob(f".{target.name}.*.tmp"))
    assert len(left) == 1 and not target.exists()
    return left[0]


def test_temporaries_of_a_killed_writer_are_swept_when_the_run_starts_again(digits_dir, tmp_path):
    run_dir = tmp_path / "run"
    stale = [killed_mid_write(run_dir / name) for name in ("log.jsonl", "checkpoint.pt", "run.json")]
    other = run_dir / ".notes.txt.abcdefgh.tmp"  # not a file training writes: not training's to delete
    other.write_text("someone else's")
    lines = []
    train(digits_run(digits_dir), run_dir, log=lines.append)
    assert not any(p.exists() for p in stale) and other.exists()
    assert sum("killed mid-write" in line for line in lines) == 3
    assert {p.name for p in run_dir.iterdir()} == {"model.pt", "run.json", "log.jsonl", "config.json", other.name}


def test_an_evaluation_killed_between_its_two_files_is_consistent_on_rerun(digits_dir, tmp_path):
    """The flags are written before the JSON: a kill in between leaves new flags beside an old JSON's
    absence — never beside a JSON of another evaluation — and the rerun writes a matching pair."""
    run_dir = tmp_path / "run"
    train(digits_run(digits_dir), run_dir, log=lambda _: None)
    evaluate(run_dir, ["natural", "pgd20"], n_examples=50, log=None)
    # kill a re-evaluation of pgd20 right after its flags were written
    script = textwrap.dedent(f"""
        import os, signal
        from part import evaluate, files
        write_json = files.write_json
        def die_before_json(path, obj):
            if str(path).endswith("pgd20.json"):
                os.kill(os.getpid(), signal.SIGKILL)
            return write_json(path, obj)
        files.write_json = die_before_json
        evaluate.evaluate({str(run_dir)!r}, ["pgd20"], n_examples=60, log=None)
    """)
    proc = subprocess.run([sys.executable, "-c", script])
    assert proc.returncode == -signal.SIGKILL
    eval_dir = run_dir / "eval"
    assert (eval_dir / "pgd20.correct.npz").is_file() and not (eval_dir / "pgd20.json").exists()
    assert list(merge_metrics(run_dir)["attacks"]) == ["natural"]  # the half-finished attack counts as not run
    metrics = evaluate(run_dir, ["pgd20"], n_examples=60, log=None)
    assert metrics["attacks"]["pgd20"]["n_examples"] == 60
    # flags replaced behind a JSON's back are refused, naming the attack
    (eval_dir / "pgd20.correct.npz").write_bytes((eval_dir / "natural.correct.npz").read_bytes())
    with pytest.raises(ValueError, match=r"flags of \['pgd20'\] are not the ones"):
        merge_metrics(run_dir)


@pytest.mark.parametrize("umask", [0o002, 0o022], ids=lambda umask: f"umask{umask:03o}")
def test_written_files_get_the_mode_a_plain_open_gives(tmp_path, umask):
    """Not the 0600 of the temporary they are written through: results stay readable by the owner's group."""
    previous = os.umask(umask)
    try:
        files.write_text(tmp_path / "a.json", "{}")
        save_torch(tmp_path / "b.pt", {"w": torch.zeros(2)})
        open(tmp_path / "plain", "w").close()
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == dict.fromkeys(["a.json", "b.pt", "plain"], 0o666 & ~umask)


def test_equal_weights_are_saved_as_equal_bytes(tmp_path):
    """A checkpoint's SHA-256 (recorded with every evaluation) changes only with its tensors."""
    torch.manual_seed(0)
    model = build_model("small_cnn", 10, 1)
    save_torch(tmp_path / "a.pt", model.state_dict())
    save_torch(tmp_path / "b.pt", model.state_dict())
    assert file_sha256(tmp_path / "a.pt") == file_sha256(tmp_path / "b.pt")
    loaded = load_torch(tmp_path / "b.pt")  # weights_only=True
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_corrupted_prepared_dataset_is_refused_with_how_to_re_prepare(digits_dir, tmp_path, capsys):
    data = tmp_path / "prepared"
    data.mkdir()
    blob = bytearray((digits_dir / "digits.pt").read_bytes())
    at = int(len(blob) * 0.4)  # inside the training images, the file's largest record
    blob[at:at + 64] = np.random.default_rng(0).integers(0, 256, 64, dtype=np.uint8).tobytes()
    (data / "digits.pt").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="do not match the checksum.*re-prepare it: `part prepare --dataset digits"):
        load_prepared(data / "digits.pt")
    cfg = write_yaml(tmp_path / "run.yaml", digits_run(data))
    code, err = run_cli(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "run"))
    assert code == 2 and "checksum" in err and "Traceback" not in err


def test_bad_inputs_end_in_clear_errors(digits_dir, tmp_path, capsys):
    good = write_yaml(tmp_path / "good.yaml", digits_run(digits_dir))
    # a budget the schema's pattern lets through
    code, err = run_cli(capsys, "train", "--config", str(good), "--out", str(tmp_path / "a"), "--set", "attack.eps=8/0")
    assert code == 2 and "key 'attack.eps'" in err and "non-zero denominator" in err
    # --out is a file, or not writable
    (tmp_path / "file").write_text("x")
    code, err = run_cli(capsys, "train", "--config", str(good), "--out", str(tmp_path / "file"))
    assert code == 2 and "is not a directory" in err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: make the path unwritable another way
        locked.rmdir()
        locked.write_text("")
        out = locked / "run"
    else:
        out = locked
    code, err = run_cli(capsys, "train", "--config", str(good), "--out", str(out))
    assert code == 2 and ("not a directory" in err or "not writable" in err)
    # a torch file that is no checkpoint of ours
    run_dir = tmp_path / "foreign"
    run_dir.mkdir()
    save_torch(run_dir / "checkpoint.pt", {"model": {}})
    code, err = run_cli(capsys, "train", "--config", str(good), "--out", str(run_dir))
    assert code == 2 and "not a checkpoint of this pipeline (missing ['config'" in err
    # a pickle carrying code is refused as such, and what it carries never runs
    marker = tmp_path / "ran"
    torch.save({"x": _Payload(str(marker))}, run_dir / "checkpoint.pt")
    code, err = run_cli(capsys, "train", "--config", str(good), "--out", str(run_dir))
    assert code == 2 and "refused" in err and "holds Python objects" in err and not marker.exists()
    # model.pt of another architecture
    finished = tmp_path / "finished"
    train(digits_run(digits_dir), finished, log=lambda _: None)
    state = load_torch(finished / "model.pt")
    save_torch(finished / "model.pt", {k.replace("features", "trunk"): v for k, v in state.items()})
    code, err = run_cli(capsys, "evaluate", "--run", str(finished), "--attacks", "natural")
    assert code == 2 and "not weights of this SmallCNN" in err and "missing" in err and "unexpected" in err


class _Payload:
    """Unpickling this would create a file: proof that a refused load ran nothing."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.fixture
def small_disk(tmp_path):
    """A 1.2 MB tmpfs: room for one small_cnn checkpoint (~0.75 MB), not for its replacement beside it."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lazy: a file object torch left open may pin it


def test_a_full_disk_says_so_and_keeps_the_last_good_checkpoint(digits_dir, small_disk, tmp_path, capsys):
    cfg = write_yaml(tmp_path / "run.yaml", digits_run(digits_dir, epochs=4))
    run_dir = small_disk / "run"
    code, err = run_cli(capsys, "train", "--config", str(cfg), "--out", str(run_dir))
    assert code == 2 and "the disk is full" in err and "checkpoint.pt was not written" in err
    assert load_torch(run_dir / "checkpoint.pt")["epoch"] == 0  # the first epoch's checkpoint, intact
    assert not list(run_dir.glob(".*.tmp"))


@pytest.mark.slow
def test_fault_injection_campaign_resumes_bit_identically(tmp_path):
    """A few random SIGKILLs of a real run (benchmarks/fault_injection.py; more with --kills)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fault_injection.py"), "--kills", "3",
                           "--epochs", "4"], capture_output=True, text=True, timeout=600)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert result["identical"] == 3 and result["stray_files"] == 0
    assert sum(o == "killed" for t in result["trials"] for o in t["outcomes"]) >= 3
