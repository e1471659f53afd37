"""Devices that fail fast, and one GPU per job: on this CPU-only machine torch sees no CUDA device, so every
request for one is refused (exit 2, one line naming torch's CUDA build, the driver and CUDA_VISIBLE_DEVICES);
the GPU slots are lock files over GPU numbers, so real processes take them here as on a multi-GPU machine."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from part.base.config import from_dict
from part.base.files import write_json
from part.cli import main

ROOT = Path(__file__).resolve().parents[1]

without_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a refusal needs a machine where torch sees no GPU")
BUILD = f"a CUDA {torch.version.cuda} build" if torch.version.cuda else "a CPU-only build"


def part(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "part", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


@without_gpu
def test_a_cuda_run_config_is_refused_in_one_line_before_anything_is_written(tmp_path):
    done = part("train", "--config", str(ROOT / "configs" / "run_digits.yaml"), "--out", str(tmp_path / "run"),
                "--set", "device=cuda", CUDA_VISIBLE_DEVICES="0")
    assert done.returncode == 2 and done.stdout == ""
    [line] = done.stderr.splitlines()
    assert line.startswith("part train: error: ") and "run_digits.yaml: key 'device': got 'cuda', but torch sees no " \
        "CUDA device here" in line
    assert f"torch {torch.__version__}, {BUILD}" in line
    assert "NVIDIA driver " in line and "CUDA_VISIBLE_DEVICES='0'" in line and "expected cpu or auto" in line
    assert not (tmp_path / "run").exists()


@pytest.fixture
def fake_run(tmp_path) -> Path:
    """A run directory as far as its device is read: its config (CUDA) and a model file."""
    run = tmp_path / "run"
    write_json(run / "config.json", from_dict({"dataset": "digits", "device": "cuda"}).to_dict())
    (run / "model.pt").write_bytes(b"")
    return run


@without_gpu
@pytest.mark.parametrize(("device", "expected"), [
    ("tpu9", "--device: got 'tpu9', expected auto, cpu, cuda or cuda:N"),
    ("", "--device: got '', expected auto, cpu, cuda or cuda:N"),
    ("meta", "--device: got 'meta', expected auto, cpu, cuda or cuda:N"),
    ("cuda", "--device: got 'cuda', but torch sees no CUDA device here"),
    ("cuda:7", "--device: got 'cuda:7', but torch sees no CUDA device here"),
    (None, "config.json: key 'device': got 'cuda', but torch sees no CUDA device here"),
])
def test_a_device_that_does_not_parse_or_is_not_here_is_refused_naming_the_flag(fake_run, capsys, device, expected):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--run", str(fake_run), *(["--device", device] if device is not None else [])])
    assert exit_info.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("part evaluate: error: ") and expected in line
    assert sorted(p.name for p in fake_run.iterdir()) == ["config.json", "model.pt"]


def test_a_run_config_device_that_does_not_parse_names_the_key(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--config", str(ROOT / "configs" / "run_digits.yaml"), "--out", str(tmp_path / "run"),
              "--set", "device=tpu9"])
    assert exit_info.value.code == 2
    assert "key 'device': got 'tpu9', expected auto, cpu, cuda or cuda:N" in capsys.readouterr().err


@without_gpu
def test_a_workflow_job_that_asks_for_a_gpu_is_refused_not_run_on_the_cpu(tmp_path):
    """``device: auto`` falls back to the CPU only where no GPU was asked for: a training job with
    ``resources.train.gpu: 1`` exits 2, its log saying why in one line, and trains nothing."""
    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    cfg["variants"] = {"at": cfg["variants"]["at"]}
    cfg["run"] = {"device": "auto", "epochs": 1, "warmup_epochs": 0}
    cfg["resources"]["train"]["gpu"] = 1
    cfg["evaluation"]["compare_checkpoints"] = []
    for check in ("robustness_curve", "sanity"):
        cfg["evaluation"][check]["variants"] = None  # every variant kept: AT alone
    cfg["experiments"] = {}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg))
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    model = "results/digits/small_cnn/at/seed0/model.pt"
    done = subprocess.run([sys.executable, "-m", "snakemake", model, "--cores", "1", "--snakefile",
                           str(ROOT / "Snakefile"), "--configfile", "grid.yaml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PART_GPU_SLOTS_DIR": str(tmp_path / "slots")})
    assert done.returncode != 0 and (tmp_path / "logs/train").exists(), done.stdout + done.stderr
    log = (tmp_path / "logs/train/digits/small_cnn/at/seed0.log").read_text().splitlines()
    refusal = [line for line in log if line.startswith("[part] job refused: ")]
    assert refusal == [line for line in log if "torch sees" in line] and len(refusal) == 1
    assert ("rule train (dataset=digits, arch=small_cnn, variant=at, seed=0) asks for 1 GPU(s) (resources.train.gpu "
            "in the workflow config), but torch sees no CUDA device here") in refusal[0]
    assert "set resources.train.gpu: 0 to run it on the CPU" in refusal[0] and "Traceback" not in "\n".join(log)
    assert "exit status 2" in done.stdout + done.stderr or "exit code 2" in done.stdout + done.stderr
    assert not (tmp_path / "results/digits/small_cnn/at/seed0/checkpoint.pt").exists()


HOLDER = textwrap.dedent("""
    import os, signal, sys
    from part.base.gpus import slots
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # part.training.distributed.exit_on_sigterm, without torch's import
    with slots(int(sys.argv[1]), "rule train (test)"):
        print(os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
        sys.stdin.readline()  # hold the slots until told to end
""")


class Holder:
    """A real process that takes ``count`` GPU slots, prints its CUDA_VISIBLE_DEVICES and holds them."""

    def __init__(self, count: int, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(count)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.visible = self.proc.stdout.readline().strip()

    def end(self) -> int:
        self.proc.communicate("\n", timeout=120)
        return self.proc.returncode


FAKE_NVIDIA_SMI = """#!/bin/sh
case "$*" in
  *driver_version*) printf '535.104.05\\n535.104.05\\n535.104.05\\n535.104.05\\n' ;;
  *index*) printf '0\\n1\\n2\\n3\\n' ;;
  *) exit 9 ;;
esac
"""


@pytest.fixture
def gpus_env(tmp_path) -> dict[str, str]:
    """A machine of four fake GPUs: an ``nvidia-smi`` that counts them and names a driver too old for a CUDA 13
    build, ``CUDA_VISIBLE_DEVICES`` unset, and a slots directory of the test's own (the slots are lock files over
    GPU numbers, so they are taken as on a real machine)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(FAKE_NVIDIA_SMI)
    (bin_dir / "nvidia-smi").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PART_GPU_SLOTS_DIR": str(tmp_path / "slots")}
    for key in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID"):
        env.pop(key, None)
    return env


def test_concurrent_jobs_get_distinct_gpus_and_give_them_back(gpus_env, tmp_path):
    """The machine's GPUs (nvidia-smi's count) are shared out: one each, two to a job that asks for two."""
    first, second, pair = Holder(1, gpus_env), Holder(1, gpus_env), Holder(2, gpus_env)
    assert (first.visible, second.visible, pair.visible) == ("0", "1", "2,3")
    assert sorted(p.name for p in (tmp_path / "slots").iterdir()) == [f"gpu{k}.lock" for k in range(4)]
    assert second.end() == 0
    third = Holder(1, gpus_env)
    assert third.visible == "1"  # the slot given back is the free one
    for holder in (first, third, pair):
        assert holder.end() == 0
    assert list((tmp_path / "slots").iterdir()) == []


def test_a_job_stopped_by_sigterm_gives_its_gpu_back_and_a_killed_ones_is_reclaimed(gpus_env, tmp_path):
    # the GPUs an allocation lists (salloc --gpus=2, then several one-GPU jobs in it), not 0..n-1
    env = {**gpus_env, "CUDA_VISIBLE_DEVICES": "5,7", "SLURM_JOB_ID": "42"}
    stopped, killed = Holder(1, env), Holder(1, env)
    assert (stopped.visible, killed.visible) == ("5", "7")
    stopped.proc.send_signal(signal.SIGTERM)
    assert stopped.proc.wait(timeout=120) == 143
    assert sorted(p.name for p in (tmp_path / "slots").iterdir()) == ["gpu7.lock"]
    killed.proc.kill()
    killed.proc.wait(timeout=120)
    assert (tmp_path / "slots" / "gpu7.lock").exists()  # SIGKILL leaves the lock; its holder is gone
    both = Holder(2, env)
    assert both.visible == "5,7"
    assert both.end() == 0


def test_a_job_finding_every_gpu_busy_is_refused_at_once_saying_why(gpus_env, tmp_path):
    holders = [Holder(1, gpus_env), Holder(2, gpus_env)]
    refused = subprocess.run([sys.executable, "-c", HOLDER, "2"], capture_output=True, text=True, timeout=60,
                             env=gpus_env)
    assert refused.returncode != 0 and refused.stdout == ""
    assert ("part.base.errors.DeviceError: rule train (test) asks for 2 GPU(s), but 3 of the 4 GPUs here (0, 1, 2, 3) are "
            f"held by running jobs (lock files gpu*.lock in {tmp_path / 'slots'})") in refused.stderr
    assert "--resources gpu=N with N at most 4" in refused.stderr
    locks = ["gpu0.lock", "gpu1.lock", "gpu2.lock"]
    assert sorted(p.name for p in (tmp_path / "slots").iterdir()) == locks  # the slot it had taken went back
    assert [holder.end() for holder in holders] == [0, 0]


@pytest.mark.parametrize(("visible", "count", "slurm"), [("3", 1, None), ("0,2", 2, None), ("1", 1, "42"),
                                                          (None, 1, "42")])
def test_gpus_a_scheduler_assigned_are_left_alone(gpus_env, tmp_path, visible, count, slurm):
    """CUDA_VISIBLE_DEVICES listing as many GPUs as the job asks for (SLURM's --gpus), or a SLURM job without it
    (its devices confined by the scheduler): nothing is taken, nothing exported."""
    env = {**gpus_env, **({"CUDA_VISIBLE_DEVICES": visible} if visible else {}),
           **({"SLURM_JOB_ID": slurm} if slurm else {})}
    holder = Holder(count, env)
    assert holder.visible == str(visible)
    assert holder.end() == 0
    assert not (tmp_path / "slots").exists()


@without_gpu
def test_the_refusal_of_a_gpu_job_names_the_driver_nvidia_smi_reports(gpus_env, tmp_path):
    """A driver too old for torch's CUDA build is the usual reason a GPU machine shows no GPU to torch."""
    done = part("train", "--config", str(ROOT / "configs" / "run_digits.yaml"), "--out", str(tmp_path / "run"),
                "--set", "device=cuda", **{key: gpus_env[key] for key in ("PATH", "PART_GPU_SLOTS_DIR")})
    assert done.returncode == 2 and "NVIDIA driver 535.104.05;" in done.stderr
