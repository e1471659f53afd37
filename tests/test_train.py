"""Small real runs: small_cnn on the digits data, on the CPU, a few seconds each."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from importlib import metadata

import pytest
import torch

from conftest import DEMO_RUN, NARROW, NARROW_LR
from part.attacks.pgd import MMA, PGD
from part.attacks.suite import correct_per_example
from part.base import config, provenance
from part.base.torchfiles import load_torch
from part.data.prepared import load_prepared
from part.evaluation.results import file_sha256
from part.models import build_model
from part.training.train import DivergenceError, train


METHODS = ["natural", "at", "trades", "mart", "part", "part_trades", "part_mart"]


def digits_config(digits_dir, **overrides):
    """At the narrow width and the demo's learning rate every method learns the digits: the thresholds below
    keep their margins (at lr 0.05, MART's natural accuracy fell to 0.78 in 6 epochs).
    Two tests keep the default width: the page-fault count, measured at it, and the kill between two ε-map
    refreshes, whose window is two epochs (the slower epochs at width 32 leave a loaded machine time to kill)."""
    raw = {"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu", "width": NARROW, "epochs": 6,
           "warmup_epochs": 2, "optim": {"lr": NARROW_LR}}
    return config.from_dict(config.deep_merge(raw, overrides))


def load_model(run_dir, cfg):
    model = build_model(cfg.model, 10, 1, cfg.width)
    model.load_state_dict(load_torch(run_dir / "model.pt"))
    return model.eval()


def accuracies(model, digits_dir, cfg):
    test = load_prepared(digits_dir / "digits.pt").test
    natural = correct_per_example(model, test).float().mean().item()
    pgd = PGD(cfg.attack.eps, cfg.attack.alpha, 10)
    robust = correct_per_example(model, test, pgd, generator=torch.Generator().manual_seed(0)).float().mean().item()
    return natural, robust


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
    """Every method trained once (shared by the tests below)."""
    runs = {}
    for method in METHODS:
        cfg = digits_config(digits_dir, method=method)
        out = tmp_path_factory.mktemp(method)
        train(cfg, out, log=lambda _: None)
        runs[method] = (cfg, out, accuracies(load_model(out, cfg), digits_dir, cfg))
    return runs


@pytest.mark.parametrize("method", METHODS)
def test_each_method_learns(trained, method):
    cfg, out, (natural, robust) = trained[method]
    assert natural > 0.80, f"{method}: natural test accuracy {natural:.3f}"
    history = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == list(range(1, 7))
    assert history[-1]["loss"] < history[0]["loss"]


def test_adversarial_training_is_more_robust_than_natural_training(trained):
    _, _, (nat_natural, nat_robust) = trained["natural"]
    for method in ("at", "part", "trades", "mart"):
        _, _, (_, robust) = trained[method]
        assert robust > nat_robust + 0.15, f"{method}: PGD accuracy {robust:.3f} vs natural training {nat_robust:.3f}"


def test_the_demos_narrow_short_runs_learn_and_adversarial_training_is_still_more_robust(digits_dir, tmp_path):
    """configs/demo.yaml trains a narrower small_cnn for fewer epochs than the digits defaults, to fit its CPU
    budget; its runs must still learn the digits, and AT must still be more robust than natural training."""
    assert DEMO_RUN["width"] < 32  # narrower than the digits default, as said above
    result = {}
    for method in ("natural", "at"):
        cfg = config.from_dict({**DEMO_RUN, "dataset": "digits", "data_dir": str(digits_dir), "method": method})
        train(cfg, tmp_path / method, log=lambda _: None)
        result[method] = accuracies(load_model(tmp_path / method, cfg), digits_dir, cfg)
    assert result["natural"][0] > 0.85 and result["at"][0] > 0.80, result
    assert result["at"][1] > result["natural"][1] + 0.15, result


def test_part_logs_its_phases_and_budget_share(trained):
    cfg, out, _ = trained["part"]
    history = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [h["phase"] for h in history] == ["warmup"] * 2 + ["part"] * 4
    assert all(h["refreshed"] for h in history[2:]) and not any(h["refreshed"] for h in history[:2])
    assert all(h["full_eps_share"] == 1.0 for h in history[:2])
    assert all(0.0 < h["full_eps_share"] < 0.6 for h in history[2:])


def test_run_json_records_config_versions_and_revision(trained):
    cfg, out, _ = trained["part_mart"]
    info = json.loads((out / "run.json").read_text())
    assert info["config"] == cfg.to_dict()
    recorded = info["environment"]["versions"]["torch"]
    assert recorded == metadata.version("torch") and torch.__version__.split("+")[0] == recorded
    assert info["environment"]["git_revision"] == provenance.git_revision()
    assert not (out / "checkpoint.pt").exists()


def test_rerunning_a_finished_run_does_nothing(trained):
    cfg, out, _ = trained["at"]
    before = (out / "model.pt").stat().st_mtime_ns
    lines = []
    train(cfg, out, log=lines.append)
    assert "nothing to do" in lines[0] and (out / "model.pt").stat().st_mtime_ns == before


def test_part_with_eps_low_equal_to_eps_is_exactly_at(digits_dir, tmp_path):
    at = digits_config(digits_dir, method="at", epochs=2, warmup_epochs=1)  # epoch 2 is a PART epoch, ε-maps refreshed
    part = digits_config(digits_dir, method="part", epochs=2, warmup_epochs=1, attack={"eps_low": at.attack.eps})
    train(at, tmp_path / "at", log=lambda _: None)
    train(part, tmp_path / "part", log=lambda _: None)
    a, p = load_torch(tmp_path / "at" / "model.pt"), load_torch(tmp_path / "part" / "model.pt")
    assert all(torch.equal(a[k], p[k]) for k in a)


def test_same_seed_same_weights_other_seed_other_weights(digits_dir, tmp_path):
    runs = {}
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(digits_config(digits_dir, method="part", epochs=2, warmup_epochs=1, seed=seed), tmp_path / name,
              log=lambda _: None)
        runs[name] = load_torch(tmp_path / name / "model.pt")
    assert all(torch.equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert file_sha256(tmp_path / "a" / "model.pt") == file_sha256(tmp_path / "b" / "model.pt")  # equal bytes too
    assert not all(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


def _train_command(cfg_path):
    return [sys.executable, "-m", "part.cli", "train", "--config", str(cfg_path)]


def _kill_after(cmd, out, epochs_done):
    """Start ``cmd --out out`` and SIGKILL it as soon as its log holds ``epochs_done`` epochs (a checkpoint exists)."""
    proc = subprocess.Popen(cmd + ["--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 600  # a stalled machine only delays the kill point; the run finishing first fails below
    while time.time() < deadline and proc.poll() is None:
        if (out / "log.jsonl").exists() and len((out / "log.jsonl").read_text().splitlines()) >= epochs_done:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "model.pt").exists(), "the run finished before it could be killed"


def test_kill_and_resume_gives_the_same_weights(digits_dir, tmp_path):
    cfg_path = tmp_path / "run.yaml"
    cfg_path.write_text(f"dataset: digits\ndata_dir: {digits_dir}\ndevice: cpu\nmethod: part_trades\n"
                        f"width: {NARROW}\nepochs: 6\nwarmup_epochs: 2\n")
    cmd = _train_command(cfg_path)
    subprocess.run(cmd + ["--out", str(tmp_path / "straight")], check=True, capture_output=True)

    killed = tmp_path / "killed"
    _kill_after(cmd, killed, 3)  # a mid-run checkpoint (after epoch 3)
    resumed = subprocess.run(cmd + ["--out", str(killed)], check=True, capture_output=True, text=True)
    assert "resuming" in resumed.stdout
    a, b = load_torch(tmp_path / "straight" / "model.pt"), load_torch(killed / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "straight" / "log.jsonl").read_text().count("\n") == (killed / "log.jsonl").read_text().count("\n")


def test_resumed_epochs_use_the_maps_computed_before_the_kill(digits_dir, tmp_path):
    """Maps refreshed every 3 PART epochs: before 0-based epochs 0 and 2 of 5. Killed once epoch 2's
    checkpoint exists (or epoch 3's), the resumed epochs 3 and 4 refresh nothing: they project onto the maps
    the killed process computed and checkpointed, and must give the uninterrupted run's bytes."""
    cfg_path = tmp_path / "run.yaml"  # the default width (not NARROW): its slower epochs make the kill window wider
    cfg_path.write_text(f"dataset: digits\ndata_dir: {digits_dir}\ndevice: cpu\nmethod: part\n"
                        "epochs: 5\nwarmup_epochs: 0\nmask: {refresh_every: 3}\n")
    cmd = _train_command(cfg_path)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(cmd + ["--out", str(straight)], check=True, capture_output=True)

    _kill_after(cmd, killed, 3)
    stopped_after = load_torch(killed / "checkpoint.pt")["epoch"]
    assert stopped_after in (2, 3), f"killed after epoch {stopped_after}: not between the refreshes"
    resumed = subprocess.run(cmd + ["--out", str(killed)], check=True, capture_output=True, text=True)
    assert "resuming" in resumed.stdout
    records = [json.loads(line) for line in (killed / "log.jsonl").read_text().splitlines()]
    assert [r["refreshed"] for r in records] == [True, False, True, False, False]
    assert file_sha256(killed / "model.pt") == file_sha256(straight / "model.pt")


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(digits_dir, tmp_path):
    cfg = digits_config(digits_dir, method="at", epochs=4, optim={"lr_milestones": [1], "lr_gamma": 1e12})
    with pytest.raises(DivergenceError, match="epoch 2"):
        train(cfg, tmp_path, log=lambda _: None)
    state = load_torch(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "model.pt").exists()


def test_a_directory_of_another_config_is_refused(digits_dir, tmp_path):
    train(digits_config(digits_dir, method="at", epochs=1), tmp_path, log=lambda _: None)
    with pytest.raises(ValueError, match="different config"):
        train(digits_config(digits_dir, method="at", epochs=1, seed=5), tmp_path, log=lambda _: None)


def test_mma_generated_training_examples(digits_dir, tmp_path):
    """The release's ``--attack mma`` option: PART trained on minimum-margin AEs. The run's attack is MMA with
    the configured settings, and its weights are not those PGD's AEs give from the same seed."""
    from part.training.train import build_engine

    cfg = digits_config(digits_dir, method="part", epochs=2, warmup_epochs=1, attack={"generator": "mma", "steps": 3})
    pgd = digits_config(digits_dir, method="part", epochs=2, warmup_epochs=1, attack={"steps": 3})
    attack = build_engine(cfg, load_prepared(digits_dir / "digits.pt").train, 10, torch.device("cpu")).attack
    assert isinstance(attack, MMA) and (attack.alpha, attack.steps) == (cfg.attack.alpha, 3)
    info = train(cfg, tmp_path / "mma", log=lambda _: None)
    train(pgd, tmp_path / "pgd", log=lambda _: None)
    assert info["final"]["phase"] == "part" and math.isfinite(info["final"]["loss"])
    a, b = load_torch(tmp_path / "mma" / "model.pt"), load_torch(tmp_path / "pgd" / "model.pt")
    assert not all(torch.equal(a[k], b[k]) for k in a)


def test_jet_recipe_needs_colour_images(digits_dir, tmp_path):
    cfg = digits_config(digits_dir, method="part", mask={"recipe": "official_jet"})
    with pytest.raises(ValueError, match="key 'mask.recipe'.*3-channel"):
        train(cfg, tmp_path, log=lambda _: None)


def test_the_ema_equals_torchs_averaged_model_bit_for_bit(digits_dir):
    """ExponentialAverage skips AveragedModel's host reads of its step count, nothing else."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from part.training.train import _averaged, build_for

    cfg = digits_config(digits_dir, method="at", ema={"decay": 0.9})
    model = build_for(cfg, 10, 1, torch.device("cpu"))
    ours = _averaged(cfg, model)
    theirs = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=False)
    theirs.update_parameters(model)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        with torch.no_grad():
            for t in [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]:
                t.add_(torch.randn(t.shape, generator=generator))
        ours.update_parameters(model)
        theirs.update_parameters(model)
    a, b = ours.state_dict(), theirs.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and int(a["n_averaged"]) == 6


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_a_training_epoch_does_not_fault_its_memory_back_in(digits_dir):
    """After ``retain_freed_memory`` (build_engine calls it), an epoch reuses the previous one's buffers:
    glibc's default thresholds handed them back and cost 10-60 thousand page faults a digits epoch."""
    import resource

    from part.base.runtime import retain_freed_memory
    from part.data.prepared import load_prepared
    from part.training.train import build_engine, run_epoch

    cfg = digits_config(digits_dir, method="part", width=32, epochs=2, warmup_epochs=1, ema={"decay": 0.9})
    engine = build_engine(cfg, load_prepared(digits_dir / "digits.pt").train, 10, torch.device("cpu"))
    if not retain_freed_memory():
        pytest.skip("not glibc: its malloc thresholds cannot be set")
    run_epoch(engine, 0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run_epoch(engine, 1)  # a PART epoch: its refresh allocates what epoch 0 did not
    run_epoch(engine, 1)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 2000
