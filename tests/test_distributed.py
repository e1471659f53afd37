"""Multi-process training (part.training.distributed) on the CPU: 2 gloo processes give a 1-process run's results.

The 2-process runs are spawned once (torch.multiprocessing, one thread each) and shared by the tests;
the kill-and-resume test launches ``part train`` with torchrun, as the workflow does. The training set is
151 digits, so every epoch ends with a global batch of 23 images that splits unevenly (12 + 11).

The processes sum gradients and batch statistics in another order than one process does, so weights
differ in the last bits. Adversarial training amplifies such differences once an attack step meets an
input gradient that is zero up to rounding (its sign flips), as between any two floating-point
implementations; a 1e-7 change of the initial weights moves a digits model by ~5e-3 within its first
epoch. So the 1- vs 2-process comparisons run natural training for several epochs and the adversarial
methods for one epoch (three steps, ε-map refresh included), where they agree to 1e-5 — TRADES for one
step: its KL attack starts 0.001·N(0, 1) from the image, where the gradient is nearly zero, and flips
signs from its second step on. A 2-process run compared with another 2-process run (resume) is
bit-identical at any length.
"""

import contextlib
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.multiprocessing as mp

from part.base import config
from part.base.torchfiles import load_torch
from part.data.prepared import PreparedDataset, Split, prepare_digits, save_prepared, split_rows
from part.training import distributed
from part.training.train import train

N_TRAIN = 151
AUGMENT = {"crop_padding": 1, "flip": True}
COMPARED = {
    "natural": {"method": "natural", "epochs": 4, "augment": AUGMENT},
    "at": {"method": "at", "epochs": 1},
    "part": {"method": "part", "epochs": 1, "warmup_epochs": 0, "augment": AUGMENT},
    "part_trades": {"method": "part_trades", "epochs": 1, "warmup_epochs": 0, "augment": AUGMENT, "batch_size": 151},
    "part_batch_index": {"method": "part", "epochs": 1, "warmup_epochs": 0, "augment": AUGMENT,
                         "mask": {"pairing": "batch_index"}},
}
RUNS = {**COMPARED, "resumable": {"method": "part", "epochs": 8, "warmup_epochs": 2}}
RUN_FILES = {"config.json", "log.jsonl", "model.pt", "run.json"}
WRITE_EVENTS = {"os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.truncate"}


def run_config(data_dir, name):
    return config.from_dict({"dataset": "digits", "data_dir": str(data_dir), "device": "cpu", **RUNS[name]})


def _write_recorder(root, writes):
    """An audit hook noting every file-system change under ``root`` (opens for writing included)."""
    root = str(root)

    def hook(event, args):
        if event == "open" and args and isinstance(args[0], str):
            path, mode, flags = args
            writing = any(c in mode for c in "wax+") if mode else bool(flags & (os.O_WRONLY | os.O_RDWR))
        elif event in WRITE_EVENTS and args and isinstance(args[0], (str, bytes, os.PathLike)):
            path, writing = os.fsdecode(args[0]), True
        else:
            return
        if writing and path.startswith(root):
            writes.append(f"{event} {path}")

    return hook


def _train_two_processes(rank, port, data_dir, root):
    """One of the 2 processes: every run of RUNS, then the list of its writes under runs/ to audit/."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")
    torch.set_num_threads(1)
    writes = []
    sys.addaudithook(_write_recorder(root / "runs", writes))
    with distributed.process_group(torch.device("cpu")):
        for name in RUNS:
            train(run_config(data_dir, name), root / "runs" / name, log=lambda _: None)
    (root / "audit" / f"rank{rank}.json").write_text(json.dumps(writes))


def _descendants(pid):
    """The processes started by ``pid``, directly or not (from /proc: torchrun starts its workers in
    sessions of their own, so its process group does not hold them)."""
    parents = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = open(stat).read().rpartition(")")[2].split()
            parents.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        found += (children := parents.get(todo.pop(), []))
        todo += children
    return found


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    full = prepare_digits()
    root = tmp_path_factory.mktemp("prepared_small")
    train_split = Split(full.train.images[:N_TRAIN], full.train.labels[:N_TRAIN])
    save_prepared(root / "digits.pt", PreparedDataset("digits", train_split, full.test, 10, full.meta))
    return root


@pytest.fixture(scope="module")
def two(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("two_processes")
    (root / "audit").mkdir()
    mp.spawn(_train_two_processes, args=(_free_port(), data_dir, root), nprocs=2)
    return root


@pytest.fixture(scope="module")
def one(data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("one_process")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for name in COMPARED:
            train(run_config(data_dir, name), root / name, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return root


def history(run_dir):
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_rows_split_a_batch_contiguously_larger_first():
    assert [split_rows(23, r, 2) for r in (0, 1)] == [slice(0, 12), slice(12, 23)]
    assert [split_rows(10, r, 4) for r in range(4)] == [slice(0, 3), slice(3, 6), slice(6, 8), slice(8, 10)]
    assert split_rows(64, 0, 1) == slice(0, 64)


@pytest.mark.parametrize("name", COMPARED)
def test_two_processes_train_the_weights_of_one(one, two, name):
    a, b = load_torch(one / name / "model.pt"), load_torch(two / "runs" / name / "model.pt")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-5, msg=lambda m: f"{name} {key}: {m}")
    h1, h2 = history(one / name), history(two / "runs" / name)
    assert [(h["phase"], h["train_acc"]) for h in h2] == [(h["phase"], h["train_acc"]) for h in h1]
    for key in ("loss", "full_eps_share"):
        assert [h[key] for h in h2] == pytest.approx([h[key] for h in h1], rel=1e-5), key


def test_a_two_process_run_has_the_usual_outputs(two):
    for name in RUNS:
        run_dir = two / "runs" / name
        assert {p.name for p in run_dir.iterdir()} == RUN_FILES, name
        info = json.loads((run_dir / "run.json").read_text())
        assert info["processes"] == 2 and info["epochs_completed"] == RUNS[name]["epochs"]
        assert len(history(run_dir)) == RUNS[name]["epochs"]


def test_only_rank_0_writes(two):
    rank0 = json.loads((two / "audit" / "rank0.json").read_text())
    rank1 = json.loads((two / "audit" / "rank1.json").read_text())
    assert any("model.pt" in w for w in rank0) and any("os.rename" in w for w in rank0)  # the hook sees writes
    assert rank1 == []


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(data_dir, two, tmp_path):
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(json.dumps({"dataset": "digits", "data_dir": str(data_dir), "device": "cpu",
                                    **RUNS["resumable"]}))
    out = tmp_path / "run"
    command = distributed.torchrun_command(2, cfg_path, out)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600  # torchrun and two workers start: slow on a loaded machine, not a failure
    while time.time() < deadline and proc.poll() is None:  # kill everything once epoch 1 is checkpointed
        if (out / "log.jsonl").exists():
            break
        time.sleep(0.01)
    for pid in [*_descendants(proc.pid), proc.pid]:  # as SLURM does: both workers and torchrun at once
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.pt").exists(), "the run finished before it could be killed"
    assert (out / "checkpoint.pt").exists()

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout
    a, b = load_torch(two / "runs" / "resumable" / "model.pt"), load_torch(out / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["epoch"] for h in history(out)] == list(range(1, RUNS["resumable"]["epochs"] + 1))
    assert {p.name for p in out.iterdir() if not p.name.startswith(".")} == RUN_FILES  # a SIGKILL may leave a .tmp
