"""Faults a hostile user or a cluster produces, injected for real: SIGKILLs mid-write, corrupted and foreign
files, a full disk, bad inputs. Each must end in a clear message (exit 2) and leave nothing half-written."""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import yaml
import pytest
import torch

from part.base import config, files
from part.base.torchfiles import load_torch, save_torch
from part.cli import main
from part.data.prepared import load_prepared
from part.evaluation import results
from part.evaluation.evaluate import evaluate
from part.evaluation.results import file_sha256, merge_metrics
from part.models import build_model
from part.training.train import train

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
        from part.base import files
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
        from part.base import files
        from part.evaluation import evaluate
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


@pytest.fixture(scope="module")
def campaign() -> dict:
    """benchmarks/fault_injection.py's two campaigns in one run, which trains their reference run once: 3 training
    trials, then 4 evaluation trials on the reference run (more with --kills and --eval-kills)."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fault_injection.py"), "--kills", "3",
                           "--eval-kills", "4", "--epochs", "4"], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_fault_injection_campaign_resumes_bit_identically(campaign):
    """A few random SIGKILLs of a real run."""
    assert campaign["identical"] == 3 and campaign["stray_files"] == 0
    assert sum(o == "killed" for t in campaign["trials"] for o in t["outcomes"]) >= 3


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
    from part import cli
    from part.base import files
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


def test_merges_wait_for_each_other_and_leave_no_lock_file(tmp_path):
    """The merge lock is removed by its holder; a merge that waited on the removed file starts over on the path's
    new one, so one that starts meanwhile (and creates a new file) never runs beside it, and none leaves the file."""
    path = tmp_path / ".merge.lock"
    inside, entered, faults, first_may_end = threading.Lock(), [], [], threading.Event()

    def merge(name: str) -> None:
        with results._merging(path):
            if not inside.acquire(blocking=False):
                faults.append(f"{name} entered beside another merge")
                return
            entered.append(name)
            if name == "first":
                first_may_end.wait(10)
            else:
                time.sleep(0.3)
            inside.release()

    def start(name: str) -> threading.Thread:
        thread = threading.Thread(target=merge, args=(name,))
        thread.start()
        return thread

    threads = [start("first")]
    while not entered:
        time.sleep(0.01)
    threads.append(start("second"))  # waits on the first one's file
    time.sleep(0.2)
    assert entered == ["first"]
    first_may_end.set()  # the first removes its file and ends; the second gets the lock of the removed file
    time.sleep(0.1)
    threads += [start("third"), start("fourth")]  # create the path's new file while the second may be inside
    for thread in threads:
        thread.join(120)  # at once when it ends; long only for a stalled machine
    assert not faults and sorted(entered) == ["first", "fourth", "second", "third"] and not path.exists()


def test_a_merge_leaves_no_lock_file_and_refuses_non_finite_results(finished_run, tmp_path):
    _, run_dir = finished_run
    run = shutil.copytree(run_dir, tmp_path / "run")
    merge_metrics(run)
    assert sorted(p.name for p in (run / "eval").iterdir()) == ["natural.correct.npz", "natural.json"]
    entry = json.loads((run / "eval" / "natural.json").read_text())
    (run / "eval" / "natural.json").write_text(json.dumps({**entry, "natural_accuracy": float("nan")}))
    with pytest.raises(ValueError, match="natural.json: key 'natural_accuracy': got a NaN or infinite number"):
        merge_metrics(run)
    assert not (run / "eval" / ".merge.lock").exists()


@pytest.mark.slow
def test_evaluation_kill_campaign_reruns_to_identical_results(campaign):
    """SIGTERM and SIGKILL of real evaluations at random moments."""
    result = campaign["evaluation"]
    assert result["identical"] == 4 and result["stray_files"] == 0 and result["left_by_sigterm"] == 0
    assert result["sigterm_exit_143"] == result["sigterm"] and result["sigterm"] + result["sigkill"] >= 2  # most stops land before the end


# ---------------------------------------------------------------------------------------------
# Refused before anything is written: every case exits 2 with one line naming the file, key or flag, and leaves
# the directory (the test's tmp_path, where each case builds its inputs first) exactly as it found it.


def made(directory: Path) -> Path:
    directory.mkdir()
    return directory


def data_dir_of(run_config: Path) -> Path:
    return Path(json.loads(run_config.read_text())["data_dir"])


def corrupted_dataset(digits_dir: Path, to: Path) -> Path:
    """A copy of the prepared digits with 64 bytes of its training images replaced."""
    to.mkdir()
    blob = bytearray((digits_dir / "digits.pt").read_bytes())
    at = int(len(blob) * 0.4)
    blob[at:at + 64] = bytes(255 - b for b in blob[at:at + 64])
    (to / "digits.pt").write_bytes(bytes(blob))
    return to


def results_with(t: Path, run_dir: Path, change) -> str:
    """A demo grid whose results directory holds ``run_dir``'s metrics.json as run digits/small_cnn/at/seed0,
    changed by ``change``; the grid's config path (for `part tables`)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["run"] = {**metrics["run"], "dataset": "digits", "model": "small_cnn", "method": "at", "seed": 0}
    change(metrics)
    target = t / "results" / "digits" / "small_cnn" / "at" / "seed0" / "metrics.json"
    target.parent.mkdir(parents=True)
    target.write_text(json.dumps(metrics))
    return workflow_config(t, lambda g: g.update(results_dir=str(t / "results")))


def eval_entry(change):
    """A damage of eval/natural.json: ``change`` applied to its entry, written with Python's NaN and Infinity."""
    def damage(path: Path) -> None:
        entry = json.loads(path.read_text())
        change(entry)
        path.write_text(json.dumps(entry))
    return damage


def foreign_lock(directory: Path, text: str | bytes, name: str = ".lock") -> Path:
    """``directory`` holding a lock file of ``text`` (fresh: its file time is now), not made by part.base.lock."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return directory


def now_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime())


def train_argv(c, t, *more):
    return ["train", "--config", str(c), "--out", str(t / "o"), *more]


def workflow_text(t: Path, edit) -> str:
    """The demo workflow config as text, changed by ``edit`` (text -> text), for what only the YAML can say."""
    path = t / "grid.yaml"
    path.write_text(edit((ROOT / "configs" / "demo.yaml").read_text()))
    return str(path)


HUGE = "x" * 5_000_000
LOCKS = {
    "valid JSON, keys missing": '{"renewed": "%s"}',
    "lease a string": '{"host": "h", "pid": 1, "started": "%s", "renewed": "%s", "purpose": "p", "lease_seconds": "60"}',
    "lease null": '{"host": "h", "pid": 1, "started": "%s", "renewed": "%s", "purpose": "p", "lease_seconds": null}',
    "lease NaN": '{"host": "h", "pid": 1, "started": "%s", "renewed": "%s", "purpose": "p", "lease_seconds": NaN}',
    "lease negative": '{"host": "h", "pid": 1, "started": "%s", "renewed": "%s", "purpose": "p", "lease_seconds": -5}',
    "pid a string": '{"host": "h", "pid": "1", "started": "%s", "renewed": "%s", "purpose": "p", "lease_seconds": 60}',
    "renewed not a time": '{"host": "h", "pid": 1, "started": "%s", "renewed": "soon%s", "purpose": "p", "lease_seconds": 60}',
    "a JSON list": '["%s", "%s"]',
    "not JSON": 'lock held by %s since %s',
}


def lock_text(template: str) -> str:
    return template.replace("%s", now_stamp())


REFUSED = {
    "--set that is not a value": {
        "not YAML (unclosed list)": (lambda c, r, t: train_argv(c, t, "--set", "epochs=[1"),
                                     ["--set 'epochs=[1': not valid YAML", "line 1"]),
        "not YAML (unclosed mapping)": (lambda c, r, t: train_argv(c, t, "--set", "attack={steps: 1"),
                                        ["--set 'attack={steps: 1': not valid YAML"]),
        "a YAML tag that runs code": (lambda c, r, t: train_argv(c, t, "--set", "epochs=!!python/object/apply:os.system ['touch pwned']"),
                                      ["not valid YAML", "python/object/apply:os.system"]),
        "a YAML tag that builds a tuple": (lambda c, r, t: train_argv(c, t, "--set", "optim.lr_milestones=!!python/tuple [1]"),
                                           ["--set 'optim.lr_milestones=", "python/tuple"]),
        "indexes into a scalar set before": (lambda c, r, t: train_argv(c, t, "--set", "epochs=3", "--set", "epochs.x=1"),
                                             ["--set 'epochs.x=1': an earlier --set gave key 'epochs' the value 3"]),
        "a scalar over keys set before": (lambda c, r, t: train_argv(c, t, "--set", "attack.steps=2", "--set", "attack=3"),
                                          ["--set 'attack=3': an earlier --set gave keys below 'attack'"]),
        "a duplicate key in its mapping": (lambda c, r, t: train_argv(c, t, "--set", "attack={steps: 1, steps: 2}"),
                                           ["key 'steps' is given twice"]),
        "no '='": (lambda c, r, t: train_argv(c, t, "--set", "epochs"), ["--set 'epochs': expected KEY=VALUE"]),
        "an empty key": (lambda c, r, t: train_argv(c, t, "--set", "=3"), ["--set '=3': expected KEY=VALUE"]),
        "an empty key part": (lambda c, r, t: train_argv(c, t, "--set", "attack..steps=1"), ["--set 'attack..steps=1'"]),
        "a 5 MB value, echoed shortened": (lambda c, r, t: train_argv(c, t, "--set", f"dataset={HUGE}"),
                                           ["key 'dataset': got 'xxx", "(5000002 characters)"]),
        "a 5 MB unknown key, echoed shortened": (lambda c, r, t: train_argv(c, t, "--set", f"{HUGE}=1"),
                                                 ["key 'xxx", "characters)': unknown key (allowed here: "]),
        "a 5 MB key, echoed shortened": (lambda c, r, t: train_argv(c, t, "--set", f"{HUGE}.a=1", "--set", f"{HUGE}=2"),
                                         ["an earlier --set gave keys below", "characters)"]),
    },
    "counts and step sizes out of range": {
        **{f"{key}={value}": (lambda c, r, t, kv=f"{key}={value}": train_argv(c, t, "--set", kv), [f"key '{key}'"])
           for key, value in [("attack.steps", 0), ("attack.steps", -1), ("attack.alpha", 0), ("attack.alpha", "0/255"),
                              ("attack.eps", 0), ("epochs", 0), ("batch_size", 0), ("optim.lr", 0),
                              ("optim.lr_gamma", 0), ("mask.refresh_every", 0), ("batchnorm.slices", 0),
                              ("validation.every", 0), ("validation.steps", 0), ("validation.seed", -1), ("seed", -1),
                              ("optim.lr", ".inf"), ("attack.steps", 2.5)]},
        "prepare --split-seed -1": (lambda c, r, t: ["prepare", "--dataset", "digits", "--out", str(t / "p"),
                                                     "--split-seed", "-1"],
                                    ["argument --split-seed: got '-1', expected a whole number from 0"]),
        "prepare --split-seed 2**32": (lambda c, r, t: ["prepare", "--dataset", "digits", "--out", str(t / "p"),
                                                        "--split-seed", str(2**32)], ["argument --split-seed: got '4294967296'"]),
        "evaluate --n-examples 0": (lambda c, r, t: ["evaluate", "--run", str(r), "--n-examples", "0"],
                                    ["argument --n-examples: got '0', expected a whole number from 1"]),
        "evaluate --seed -1": (lambda c, r, t: ["evaluate", "--run", str(r), "--seed", "-1"], ["argument --seed: got '-1'"]),
    },
    "PART_LOCK_LEASE": {
        f"PART_LOCK_LEASE={value}": (lambda c, r, t: train_argv(c, t), [f"PART_LOCK_LEASE='{value}'", "a number > 0"], value)
        for value in ["inf", "nan", "-1", "0", "soon", "1e300", "1e9"]
    },
    "YAML files and their values": {
        "a run config's duplicate key": (lambda c, r, t: train_argv(_text(t / "d.yaml", "dataset: digits\nepochs: 2\nepochs: 3\n"), t),
                                         ["d.yaml: not valid YAML", "key 'epochs' is given twice", "lines 2 and 3"]),
        "a run config's duplicate nested key": (lambda c, r, t: train_argv(_text(t / "d.yaml", "attack:\n  steps: 1\n  alpha: 0.1\n  steps: 2\n"), t),
                                                ["d.yaml: not valid YAML", "key 'steps' is given twice"]),
        "a run config's YAML tag": (lambda c, r, t: train_argv(_text(t / "d.yaml", "seed: !!python/name:os.system\n"), t),
                                    ["d.yaml: not valid YAML", "python/name:os.system"]),
        "a run config that is a directory": (lambda c, r, t: train_argv(str(made(t / "d")), t), ["/d: a directory, expected a run config"]),
        "a workflow config's duplicate variant": (lambda c, r, t: ["plan", "--configfile", workflow_text(t, lambda s: s.replace(
            '  mart:           {label: "MART"', '  at:             {label: "AT2", family: AT, run: {method: at}}\n  mart:           {label: "MART"'))],
            ["grid.yaml: not valid YAML", "key 'at' is given twice"]),
        "a workflow config's duplicate top-level key": (lambda c, r, t: ["tables", "--configfile", workflow_text(t, lambda s: s + "\nresults_dir: elsewhere\n")],
                                                        ["grid.yaml: not valid YAML", "key 'results_dir' is given twice"]),
        "two variants of one label": (lambda c, r, t: ["plan", "--configfile", workflow_config(t, lambda g: g["variants"]["mart"].update(label="AT"))],
                                      ["grid.yaml: key 'variants.mart.label': got 'AT', the label of 'variants.at' too"]),
        "two rows of an experiment of one label": (lambda c, r, t: ["plan", "--configfile", workflow_config(
            t, lambda g: g["experiments"]["cam_methods"]["variants"]["part_xgradcam"].update(label="LayerCAM"))],
            ["key 'experiments.cam_methods.variants.part_xgradcam.label': got 'LayerCAM', the label of 'experiments.cam_methods.variants.part_layercam'"]),
        "results_dir a file (plan)": (lambda c, r, t: ["plan", "--configfile", workflow_config(t, lambda g: g.update(results_dir=_text(t / "f", "")))],
                                      ["grid.yaml: key 'results_dir'", "/f is a file"]),
        "results_dir a file (tables)": (lambda c, r, t: ["tables", "--configfile", workflow_config(t, lambda g: g.update(results_dir=_text(t / "f", "")))],
                                        ["grid.yaml: key 'results_dir'", "/f is a file"]),
        "results_dir below a file": (lambda c, r, t: ["tables", "--configfile", workflow_config(t, lambda g: g.update(results_dir=_text(t / "f", "") + "/r"))],
                                     ["grid.yaml: key 'results_dir'", "/f is a file"]),
        "data.prepared_dir a file": (lambda c, r, t: ["plan", "--configfile", workflow_config(t, lambda g: g["data"].update(prepared_dir=_text(t / "f", "")))],
                                     ["grid.yaml: key 'data.prepared_dir'", "/f is a file"]),
        "data.raw_dir a file": (lambda c, r, t: ["plan", "--configfile", workflow_config(t, lambda g: g["data"].update(raw_dir=_text(t / "f", "")))],
                                ["grid.yaml: key 'data.raw_dir'", "/f is a file"]),
        "a run's data_dir a file": (lambda c, r, t: train_argv(c, t, "--set", f"data_dir={_text(t / 'f', '')}"),
                                    ["key 'data_dir'", "/f is a file", "part prepare --out DIR"]),
        "evaluate --data-dir a file": (lambda c, r, t: ["evaluate", "--run", str(r), "--attacks", "natural", "--no-merge",
                                                        "--data-dir", _text(t / "f", "")], ["--data-dir: ", "/f is a file"]),
        "a 5 MB label, echoed shortened": (lambda c, r, t: ["plan", "--configfile", workflow_config(t, lambda g: g["variants"]["at"].update(label=HUGE + "|"))],
                                           ["key 'variants.at.label': got 'xxx", "characters)"]),
    },
    "lock files not written by part.base.lock": {
        **{f"run lock: {name}": (lambda c, r, t, tpl=tpl: train_argv(c, foreign_lock(t / "o", lock_text(tpl)).parent),
                                 ["/o: .lock is not a lock record this pipeline wrote", "delete ", "/o/.lock"])
           for name, tpl in LOCKS.items()},
        "run lock: not UTF-8": (lambda c, r, t: train_argv(c, foreign_lock(t / "o", b"\xff\xfe\x00lock").parent),
                                ["not a lock record this pipeline wrote", "/o/.lock"]),
        "an evaluation's lock: keys missing": (lambda c, r, t: ["evaluate", "--run", str(foreign_lock(
            shutil.copytree(r, t / "r") / "eval", lock_text(LOCKS["valid JSON, keys missing"]), ".natural.lock").parent),
            "--attacks", "natural", "--no-merge"], ["r/eval: .natural.lock is not a lock record", "delete ", "r/eval/.natural.lock"]),
    },
    "NaN and infinity in results": {
        **{f"eval JSON {key} {value}": (lambda c, r, t, key=key, value=value: ["evaluate", "--run", str(damaged_copy(
            r, t / "r", "eval/natural.json", eval_entry(lambda e: e.update({key: value})))), "--merge-only"],
            ["r/eval/natural.json: key '" + key + "': got a NaN or infinite number"])
           for key, value in [("accuracy", float("nan")), ("accuracy", float("inf")), ("seconds", float("-inf")),
                              ("n_correct", float("nan"))]},
        "eval JSON setting 1e999": (lambda c, r, t: ["evaluate", "--run", str(damaged_copy(r, t / "r", "eval/natural.json", lambda p: p.write_text(
            p.read_text().replace('"seconds": ', '"seconds": 1e999, "_": ')))), "--merge-only"], ["r/eval/natural.json: key 'seconds'"]),
        **{f"metrics.json {where} {value} (tables)": (lambda c, r, t, where=where, value=value: ["tables", "--configfile", results_with(
            t, r, lambda m: functools.reduce(dict.__getitem__, where.split(".")[:-1], m).update({where.split(".")[-1]: value}))],
            ["seed0/metrics.json: key '" + where + "': got a NaN or infinite number"])
           for where, value in [("attacks.natural.accuracy", float("nan")), ("worst_case.accuracy", float("inf")),
                                ("attacks.natural.seconds", float("-inf"))]},
    },
    "stray files after a refusal": {
        "train: no prepared dataset": (lambda c, r, t: train_argv(c, t, "--set", f"data_dir={made(t / 'empty')}"),
                                       ["empty/digits.pt: prepared dataset not found"]),
        "train: a corrupted dataset": (lambda c, r, t: train_argv(c, t, "--set", f"data_dir={corrupted_dataset(data_dir_of(c), t / 'bad')}"),
                                       ["bad/digits.pt", "checksum"]),
        "train into an existing empty directory: no dataset": (lambda c, r, t: train_argv(c, made(t / "o").parent, "--set", f"data_dir={t / 'none'}"),
                                                               ["none/digits.pt: prepared dataset not found"]),
        "train: a colour recipe on grey images": (lambda c, r, t: train_argv(c, t, "--set", "mask.recipe=official_jet"),
                                                  ["key 'mask.recipe': official_jet gives one budget per RGB channel"]),
        "train: more held out than there are images": (lambda c, r, t: train_argv(c, t, "--set", "validation.size=100000"),
                                                       ["run.yaml: "]),
        "merge-only: no eval/": (lambda c, r, t: ["evaluate", "--run", str(damaged_copy(r, t / "r", "eval", shutil.rmtree)), "--merge-only"],
                                 ["r/eval: missing, no evaluated attack to merge"]),
        "merge-only: an empty eval/": (lambda c, r, t: ["evaluate", "--run", str(damaged_copy(r, t / "r", "eval", lambda p: (shutil.rmtree(p), p.mkdir()))), "--merge-only"],
                                       ["r/eval: no evaluated attack to merge"]),
        "merge-only: no run": (lambda c, r, t: ["evaluate", "--run", str(t / "nothing"), "--merge-only"], ["nothing/eval: missing"]),
        "merge-only --checkpoint ema never evaluated": (lambda c, r, t: ["evaluate", "--run", str(shutil.copytree(r, t / "r")), "--merge-only", "--checkpoint", "ema"],
                                                        ["r/eval_ema: missing"]),
        "evaluate: no run": (lambda c, r, t: ["evaluate", "--run", str(t / "nothing"), "--attacks", "natural"], ["nothing/config.json: missing"]),
    },
}


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path below ``root`` with its bytes (None for a directory): what a refused command must not change."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", [(cls, name) for cls, cases in REFUSED.items() for name in cases], ids=" / ".join)
def test_a_refused_input_exits_2_in_one_line_and_writes_nothing(case, finished_run, tmp_path, capsys, monkeypatch):
    run_config, run_dir = finished_run
    make_argv, expected, *env = REFUSED[case[0]][case[1]]
    if env:
        monkeypatch.setenv("PART_LOCK_LEASE", env[0])
    argv = make_argv(run_config, run_dir, tmp_path)
    before, metrics_before = snapshot(tmp_path), (run_dir / "metrics.json").read_bytes()
    code, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line and not line.startswith(("usage:", " "))]  # argparse's usage
    assert code == 2 and len(lines) == 1 and lines[0].startswith("part "), err[:2000]
    assert len(lines[0]) < 2000, lines[0][:300]
    for text in expected:
        assert text in lines[0], lines[0]
    assert snapshot(tmp_path) == before
    assert (run_dir / "metrics.json").read_bytes() == metrics_before and not list(run_dir.rglob("*lock"))


@pytest.mark.parametrize("where", ["a variant defined twice", "results_dir a file"])
def test_the_workflow_refuses_what_part_refuses_when_it_parses_the_config(where, tmp_path):
    """Snakemake reads the config file itself (keeping the last of a duplicate key); its parse reads it again
    as part does, and builds the grid, so a dry run stops naming the file and key, with nothing written."""
    if where == "results_dir a file":
        config = workflow_config(tmp_path, lambda g: g.update(results_dir=_text(tmp_path / "f", "")))
    else:
        config = workflow_text(tmp_path, lambda s: s.replace(
            '  mart:           {label: "MART"', '  at:             {label: "AT2", family: AT, run: {method: at}}\n'
                                               '  mart:           {label: "MART"'))
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    before = snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile", str(ROOT / "Snakefile"),
                           "--configfile", config], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    expected = ("grid.yaml: not valid YAML (key 'at' is given twice" if where == "a variant defined twice"
                else "key 'results_dir': ")
    assert proc.returncode != 0 and expected in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(".snakemake")} == before
