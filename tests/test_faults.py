"""Faults a hostile user or a cluster produces, injected for real: SIGKILLs mid-write, corrupted and foreign
files, a full disk, bad inputs. Each must end in a clear message (exit 2) and leave nothing half-written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import yaml
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


def test_a_failing_writer_keeps_the_previous_version_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    files.write_text(target, "previous")

    def fails_halfway(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("the writer failed")

    with pytest.raises(OSError, match="the writer failed"):
        files.atomic_write(target, fails_halfway)
    assert target.read_text() == "previous" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


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
                           "--eval-kills", "0", "--epochs", "4"], capture_output=True, text=True, timeout=600)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, proc.stderr
    assert result["identical"] == 3 and result["stray_files"] == 0
    assert sum(o == "killed" for t in result["trials"] for o in t["outcomes"]) >= 3


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, digits_dir):
    """A finished run that keeps best.pt, with natural evaluated on 50 images; tests change copies of it."""
    root = tmp_path_factory.mktemp("finished")
    cfg = digits_run(digits_dir, validation={"size": 100, "steps": 2})
    train(cfg, root / "run", log=lambda _: None)
    evaluate(root / "run", ["natural"], n_examples=50, log=None)
    return write_yaml(root / "run.yaml", cfg), root / "run"


def damaged_copy(run_dir: Path, to: Path, name: str, damage) -> Path:
    """A copy of ``run_dir`` whose file ``name`` is replaced by ``damage(path)``."""
    shutil.copytree(run_dir, to)
    damage(to / name)
    return to


def truncate(path: Path) -> None:
    path.write_text(path.read_text()[: len(path.read_text()) // 2])


def without_key(key: str):
    def damage(path: Path) -> None:
        entry = json.loads(path.read_text())
        del entry[key]
        path.write_text(json.dumps(entry))
    return damage


def object_flags(path: Path) -> None:
    """Per-example flags saved as an object array (loading it would unpickle); its JSON names its hash."""
    with open(path, "wb") as f:
        np.savez(f, correct=np.array([True, None], dtype=object), index=np.arange(2))
    entry_path = path.parent / "natural.json"
    entry = json.loads(entry_path.read_text())
    entry_path.write_text(json.dumps({**entry, "correct_sha256": file_sha256(path)}))


def workflow_config(tmp_path: Path, change) -> str:
    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    change(cfg)
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    return str(tmp_path / "grid.yaml")


def rename_variant(cfg: dict) -> None:
    cfg["variants"]["at\n"] = cfg["variants"].pop("at")
    cfg["evaluation"]["robustness_curve"]["variants"] = None  # the demo names "at" there too


BAD_INPUTS = {
    # name: (argv built from (run config, finished run, tmp_path), what the message must hold)
    "config is a YAML list": (lambda c, r, t: ["train", "--config", _text(t / "l.yaml", "- a\n- b\n"), "--out",
                                               str(t / "o"), "--set", "seed=1"], ["l.yaml: a run config must be a YAML mapping", "got \"['a', 'b']\" (list)"]),
    "config is a YAML scalar": (lambda c, r, t: ["train", "--config", _text(t / "s.yaml", "42\n"), "--out", str(t / "o"),
                                                 "--set", "seed=1"], ["s.yaml: a run config must be a YAML mapping", "got '42' (int)"]),
    "config not UTF-8": (lambda c, r, t: ["train", "--config", _bytes(t / "u.yaml", b"dataset: d\xe9gits\n"), "--out",
                                          str(t / "o")], ["u.yaml: not UTF-8 text"]),
    "--out of a finished run of another config": (lambda c, r, t: ["train", "--config", str(c), "--out", str(r), "--set", "seed=3"],
                                                 ["run.json: this directory holds a finished run with a different config"]),
    "run.json is []": (lambda c, r, t: ["train", "--config", str(c), "--out", str(damaged_copy(r, t / "r", "run.json", lambda p: p.write_text("[]")))],
                       ["r/run.json: holds a JSON list, expected an object"]),
    "run.json truncated": (lambda c, r, t: ["train", "--config", str(c), "--out", str(damaged_copy(r, t / "r", "run.json", truncate))],
                           ["r/run.json: not valid JSON", "truncated or corrupted"]),
    "config.json truncated": (lambda c, r, t: ["evaluate", "--run", str(damaged_copy(r, t / "r", "config.json", truncate)), "--attacks", "natural"],
                              ["r/config.json: not valid JSON"]),
    "eval JSON truncated": (lambda c, r, t: ["evaluate", "--run", str(damaged_copy(r, t / "r", "eval/natural.json", truncate)), "--merge-only"],
                            ["r/eval/natural.json: not valid JSON"]),
    "eval JSON without checkpoint_sha256": (lambda c, r, t: ["evaluate", "--run", str(damaged_copy(r, t / "r", "eval/natural.json", without_key("checkpoint_sha256"))), "--merge-only"],
                                            ["r/eval/natural.json: 'checkpoint_sha256' is a required property"]),
    "object-array flags": (lambda c, r, t: ["evaluate", "--run", str(damaged_copy(r, t / "r", "eval/natural.correct.npz", object_flags)), "--merge-only"],
                           ["r/eval/natural.correct.npz: not the per-example flags this pipeline writes", "Object arrays"]),
    "model.pt of random bytes": (lambda c, r, t: ["evaluate", "--run", str(damaged_copy(r, t / "r", "model.pt", lambda p: p.write_bytes(os.urandom(4096)))), "--attacks", "natural"],
                                 ["r/model.pt: cannot be read as a torch file (Unsupported operand", "corrupted or truncated"]),
    "best.pt removed": (lambda c, r, t: ["evaluate", "--run", str(damaged_copy(r, t / "r", "best.pt", Path.unlink)), "--checkpoint", "best", "--attacks", "natural"],
                        ["r/best.pt: missing, though the run keeps its best weights (key 'validation.size' > 0"]),
    "--batch-size -5": (lambda c, r, t: ["evaluate", "--run", str(r), "--attacks", "natural", "--batch-size", "-5", "--no-merge"],
                        ["batch size -5 (--batch-size, evaluation.batch_size): expected at least 1 image"]),
    "--batch-size 0": (lambda c, r, t: ["evaluate", "--run", str(r), "--attacks", "natural", "--batch-size", "0", "--no-merge"],
                       ["batch size 0 (--batch-size"]),
    "ema.decay: .nan": (lambda c, r, t: ["train", "--config", str(c), "--out", str(t / "o"), "--set", "ema.decay=.nan"],
                        ["key 'ema.decay': got nan, expected a finite number"]),
    "--out ''": (lambda c, r, t: ["train", "--config", str(c), "--out", ""], ["argument --out: '': an empty path"]),
    "variant name 'at\\n'": (lambda c, r, t: ["plan", "--configfile", workflow_config(t, rename_variant)],
                             ["grid.yaml: key 'variants': got 'at\\n', expected lower-case letters, digits and _ only"]),
    "results_dir ''": (lambda c, r, t: ["plan", "--configfile", workflow_config(t, lambda g: g.update(results_dir=""))],
                       ["grid.yaml: key 'results_dir': '' should be non-empty"]),
    "label with '|'": (lambda c, r, t: ["plan", "--configfile", workflow_config(t, lambda g: g["variants"]["at"].update(label="A|T"))],
                       ["grid.yaml: key 'variants.at.label': got 'A|T', expected one line without '|'"]),
    "label with a newline": (lambda c, r, t: ["plan", "--configfile", workflow_config(t, lambda g: g["variants"]["at"].update(label="AT\n"))],
                             ["grid.yaml: key 'variants.at.label': got 'AT\\n', expected one line without '|'"]),
    "experiment variant key misspelt": (lambda c, r, t: ["tables", "--configfile", workflow_config(
        t, lambda g: g["experiments"]["cam_methods"]["variants"]["part_xgradcam"].update(lable="X"))],
        ["grid.yaml: key 'experiments.cam_methods.variants.part_xgradcam.lable': unknown key "
         "(allowed here: family, label, run)"]),
    "workflow config is a YAML list": (lambda c, r, t: ["plan", "--configfile", _text(t / "g.yaml", "- a\n")],
                                       ["g.yaml: a workflow config must be a YAML mapping"]),
}


def _text(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _bytes(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_the_last_bad_inputs_exit_2_naming_the_file_or_key(case, finished_run, tmp_path, capsys):
    """Each once ended in a raw traceback, was accepted though wrong, or said what went wrong but not where."""
    run_config, run_dir = finished_run
    make_argv, expected = BAD_INPUTS[case]
    code, err = run_cli(capsys, *make_argv(run_config, run_dir, tmp_path))
    assert code == 2 and "Traceback" not in err
    for text in expected:
        assert text in err, err


STALLED_MERGE = textwrap.dedent("""
    import sys, time
    from part import cli, files
    atomic_write = files.atomic_write
    def stalled(path, write):
        if not str(path).endswith("metrics.json"):
            return atomic_write(path, write)
        def half_then_wait(tmp):
            tmp.write_text("{{half")
            print("writing", flush=True)
            time.sleep(60)
        return atomic_write(path, half_then_wait)
    files.atomic_write = stalled
    cli.main(["evaluate", "--run", {run!r}, "--merge-only"])
""")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_an_evaluation_stopped_while_writing_metrics_leaves_nothing_the_next_merge_keeps(sig, finished_run, tmp_path):
    """SIGTERM: the evaluation exits 143 and removes its temporary at once; SIGKILL cannot, so the run's next
    merge (serialised by its lock) sweeps it. metrics.json is the old one throughout, then the new one."""
    _, run_dir = finished_run
    run = shutil.copytree(run_dir, tmp_path / "run")
    old = (run / "metrics.json").read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", STALLED_MERGE.format(run=str(run))], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing", proc.stderr.read()
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
    left = sorted(p.name for p in run.glob(".metrics.json.*.tmp"))
    assert (run / "metrics.json").read_bytes() == old
    assert len(left) == (0 if sig == signal.SIGTERM else 1)
    assert "Traceback" not in proc.stderr.read()
    merge_metrics(run)
    assert not list(run.rglob("*.tmp")) and json.loads((run / "metrics.json").read_text())["attacks"]["natural"]


@pytest.mark.slow
def test_evaluation_kill_campaign_reruns_to_identical_results(tmp_path):
    """SIGTERM and SIGKILL of real evaluations at random moments (benchmarks/fault_injection.py --eval-kills)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fault_injection.py"), "--kills", "0",
                           "--eval-kills", "4", "--epochs", "3"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)["evaluation"]
    assert result["identical"] == 4 and result["stray_files"] == 0 and result["left_by_sigterm"] == 0
    assert result["sigterm_exit_143"] == result["sigterm"] and result["sigterm"] + result["sigkill"] >= 2  # most stops land before the end
