"""Robust validation, best-vs-last and EMA checkpoints: the held-out split, best.pt as the argmax, the EMA
against a hand computation, bit-identical resume with both on, evaluation of each checkpoint, the table."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import NARROW
from part.analysis.checkpoint_table import same_weights, write_checkpoint_table
from part.base import config, grid
from part.base.config import ConfigError
from part.base.rundir import RunPaths, read_log
from part.base.torchfiles import load_torch
from part.data.prepared import hold_out, load_prepared, split_sha256
from part.evaluation.evaluate import evaluate
from part.evaluation.results import file_sha256
from part.models import build_model, load_weights
from part.training.train import Validation, _averaged, build_for, split_for_training, train

VALIDATED = {"validation": {"size": 180, "seed": 0, "every": 1, "steps": 3}, "ema": {"decay": 0.9}}


def digits_config(digits_dir, **overrides):
    raw = {"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu", "width": NARROW, "epochs": 5,
           "warmup_epochs": 2, "method": "part", **VALIDATED}
    return config.from_dict(config.deep_merge(raw, overrides))


@pytest.fixture(scope="module")
def validated_run(digits_dir, tmp_path_factory):
    cfg = digits_config(digits_dir)
    out = tmp_path_factory.mktemp("validated")
    return cfg, out, train(cfg, out, log=lambda _: None)


def test_held_out_split_is_disjoint_seeded_and_shrinks_the_training_set(digits_dir):
    train_split = load_prepared(digits_dir / "digits.pt").train
    rest, held = hold_out(train_split, 180, seed=0)
    assert len(held) == 180 and len(rest) == len(train_split) - 180
    rows = {bytes(x.numpy()) + bytes([int(y)]) for x, y in zip(train_split.images, train_split.labels)}
    rest_rows = [bytes(x.numpy()) + bytes([int(y)]) for x, y in zip(rest.images, rest.labels)]
    held_rows = [bytes(x.numpy()) + bytes([int(y)]) for x, y in zip(held.images, held.labels)]
    assert set(rest_rows) | set(held_rows) <= rows
    # every training image lands in exactly one part (the digits set has a few exact duplicates: count them)
    assert sorted(rest_rows + held_rows) == sorted(bytes(x.numpy()) + bytes([int(y)])
                                                   for x, y in zip(train_split.images, train_split.labels))
    again = hold_out(train_split, 180, seed=0)[1]
    assert torch.equal(again.images, held.images) and split_sha256(again) == split_sha256(held)
    assert split_sha256(hold_out(train_split, 180, seed=1)[1]) != split_sha256(held)
    with pytest.raises(ValueError, match="validation.size"):
        hold_out(train_split, len(train_split), seed=0)


def test_validation_is_off_by_default_and_the_size_is_checked(digits_dir):
    cfg = config.from_dict({"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu"})
    assert cfg.validation.size == 0 and cfg.ema.decay == 0 and not any(cfg.validates_at(e) for e in range(cfg.epochs))
    split = load_prepared(digits_dir / "digits.pt").train
    assert split_for_training(cfg, split, torch.device("cpu")) == (split, None)
    too_big = digits_config(digits_dir, validation={"size": 5000})
    with pytest.raises(ConfigError, match="validation.size"):
        split_for_training(too_big, split, torch.device("cpu"))
    every = digits_config(digits_dir, epochs=7, validation={"every": 3})
    assert [e for e in range(7) if every.validates_at(e)] == [2, 5, 6]  # and always the last epoch


def test_run_validates_every_epoch_and_records_the_split(validated_run):
    cfg, out, info = validated_run
    records = read_log(out)
    assert all({"val_natural", "val_robust", "val_seconds"} <= set(r) for r in records)
    assert all(0 <= r["val_robust"] <= r["val_natural"] <= 100 for r in records[1:])
    assert info["validation"]["train_images"] == 1437 - 180 and info["validation"]["size"] == 180
    assert info["checkpoints"] == ["last", "best", "ema"]
    assert all(RunPaths(out).weights(c).is_file() for c in info["checkpoints"])


def test_best_checkpoint_is_the_argmax_and_holds_that_epochs_weights(validated_run, digits_dir):
    cfg, out, info = validated_run
    records = read_log(out)
    robust = [r["val_robust"] for r in records]
    best = int(np.argmax(robust))  # the first of equals
    assert info["best"] == {"epoch": best + 1, "val_robust": robust[best], "val_natural": records[best]["val_natural"]}
    # re-validating best.pt with that epoch's generator reproduces the logged numbers exactly
    _, validation = split_for_training(cfg, load_prepared(digits_dir / "digits.pt").train, torch.device("cpu"))
    model = build_for(cfg, 10, 1, torch.device("cpu"))
    load_weights(model, load_torch(RunPaths(out).best), "best.pt")
    again = validation(model, cfg.seed, best)
    assert (again["val_robust"], again["val_natural"]) == (robust[best], records[best]["val_natural"])


def test_ema_equals_a_hand_computation_for_two_steps():
    cfg = config.from_dict({"dataset": "digits", "device": "cpu", "ema": {"decay": 0.75}})
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    p0 = [p.detach().clone() for p in model.parameters()]
    ema = _averaged(cfg, model)
    steps = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(8, 3)).pow(2).sum().backward()
        optimizer.step()
        ema.update_parameters(model)
        steps.append([p.detach().clone() for p in model.parameters()])
    d = 0.75
    for averaged, w0, w1, w2 in zip(ema.module.parameters(), p0, *steps):
        assert torch.allclose(averaged, d * d * w0 + d * (1 - d) * w1 + (1 - d) * w2, atol=1e-6)
    # batch-norm statistics are the trained model's, not averaged
    assert torch.equal(ema.module[1].running_mean, model[1].running_mean)


def test_resume_with_validation_and_ema_is_bit_identical(digits_dir, tmp_path):
    cfg = digits_config(digits_dir)
    straight = tmp_path / "straight"
    train(cfg, straight, log=lambda _: None)
    # stop after epoch 3 by training a 3-epoch prefix's checkpoint: the same epochs, then resume to 5
    resumed = tmp_path / "resumed"
    state = {}

    def stop_after_three(line):
        if "epoch   3/" in line:
            state["stopped"] = True
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, resumed, log=stop_after_three)
    assert state and RunPaths(resumed).checkpoint.is_file() and not RunPaths(resumed).model.is_file()
    lines = []
    train(cfg, resumed, log=lines.append)
    assert any("resuming" in line for line in lines)
    for name in ("model.pt", "best.pt", "ema.pt"):
        a, b = load_torch(straight / name), load_torch(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    strip = [{k: v for k, v in r.items() if not k.endswith("seconds") and k != "images_per_second"}
             for r in read_log(straight)]
    assert strip == [{k: v for k, v in r.items() if not k.endswith("seconds") and k != "images_per_second"}
                     for r in read_log(resumed)]


def test_each_checkpoint_is_evaluated_into_its_own_files(validated_run):
    cfg, out, info = validated_run
    weights = {}
    for checkpoint in ("last", "best", "ema"):
        metrics = evaluate(out, ["natural", "pgd20"], n_examples=100, checkpoint=checkpoint, log=None)
        assert metrics["checkpoint"] == checkpoint
        assert metrics["attacks"]["pgd20"]["correct_file"].startswith("eval/" if checkpoint == "last"
                                                                       else f"eval_{checkpoint}/")
        assert metrics["checkpoint_sha256"] == file_sha256(RunPaths(out).weights(checkpoint))
        weights[checkpoint] = metrics["checkpoint_sha256"]
    # equal weights are saved as equal bytes: best.pt is model.pt's twin exactly when the best epoch was the last
    assert (weights["best"] == weights["last"]) == (info["best"]["epoch"] == cfg.epochs)
    assert weights["ema"] not in (weights["last"], weights["best"])
    assert {p.name for p in out.glob("metrics*.json")} == {"metrics.json", "metrics_best.json", "metrics_ema.json"}


def test_missing_best_weights_name_the_key(digits_dir, tmp_path):
    cfg = config.from_dict({"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu", "epochs": 1,
                            "warmup_epochs": 0, "method": "at"})
    train(cfg, tmp_path / "plain", log=lambda _: None)
    with pytest.raises(FileNotFoundError, match="validation.size"):
        evaluate(tmp_path / "plain", ["natural"], checkpoint="best", log=None)


def _demo_grid(results_dir, **evaluation):
    cfg = yaml.safe_load(open("configs/demo.yaml"))
    cfg["results_dir"] = str(results_dir)
    cfg["variants"] = {k: cfg["variants"][k] for k in ("at", "part_s1")}
    for check in ("robustness_curve", "sanity"):
        cfg["evaluation"][check]["variants"] = None  # every one of the two kept
    cfg["seeds"] = [0, 1]
    cfg["experiments"] = {}
    cfg["evaluation"].update(evaluation)
    return cfg


def test_grid_refuses_a_checkpoint_its_runs_do_not_keep(tmp_path):
    cfg = _demo_grid(tmp_path, compare_checkpoints=["best"])
    del cfg["run"]["validation"]
    with pytest.raises(ConfigError, match="evaluation.compare_checkpoints.*validation.size"):
        grid.load(cfg)
    cfg = _demo_grid(tmp_path, checkpoint="ema")
    cfg["run"]["ema"] = {"decay": 0.0}
    with pytest.raises(ConfigError, match="evaluation.checkpoint.*ema.decay"):
        grid.load(cfg)
    g = grid.load(_demo_grid(tmp_path, checkpoint="best", compare_checkpoints=["last", "best"]))
    assert (g.checkpoint, g.compared_checkpoints, g.metrics_name) == ("best", ("last",), "metrics_best.json")
    assert "validation_digits" in g.figure_stems()


def test_checkpoint_table_compares_with_the_main_checkpoint(digits_dir, tmp_path):
    g = grid.load(_demo_grid(tmp_path / "results", compare_checkpoints=["best", "ema"]))
    paths = []
    for run in g.main:
        cfg = config.from_dict({**run.config.to_dict(), "data_dir": str(digits_dir), "epochs": 3, "warmup_epochs": 1})
        out = g.run_dir(run)
        train(cfg, out, log=lambda _: None)
        (out / "run.json").write_text(json.dumps({**json.loads((out / "run.json").read_text()),
                                                  "config": run.config.to_dict()}))
        for checkpoint in ("last", "best", "ema"):
            evaluate(out, ["natural", "pgd20"], n_examples=120, checkpoint=checkpoint, log=None)
            paths.append(out / ("metrics.json" if checkpoint == "last" else f"metrics_{checkpoint}.json"))
    written = write_checkpoint_table(g, paths, tmp_path / "tables")
    table = pd.read_csv(written["csv"], dtype={"verdict": str, "to_decide": str})
    assert len(table) == 2 * 3 * 2  # variants x checkpoints x attacks
    assert (table["n_seeds"] == 2).all() and (table["n_examples"] == 120).all()
    last = table[table["checkpoint"] == "last"].set_index(["variant", "attack"])
    for _, row in table[table["checkpoint"] != "last"].iterrows():
        # the paired difference's mean is the difference of the means (same seeds, same examples)
        assert row["diff"] == pytest.approx(row["mean"] - last.loc[(row["variant"], row["attack"]), "mean"], abs=2e-4)
        if row["verdict"] == "same weights":  # every run of the row peaked on its last epoch: best.pt is model.pt
            assert row["checkpoint"] == "best" and row["diff"] == 0 and np.isnan(row["diff_low"])
            continue
        assert row["diff_low"] <= row["diff"] <= row["diff_high"]
        assert row["verdict"] in {"higher", "lower", "inconclusive"}
        assert (row["verdict"] == "higher") == (row["diff_low"] > 0)
    md = written["md"].read_text()
    assert "Δ PGD-20 best − last" in md and "Δ PGD-20 ema − last" in md and "of 3" in md


def test_best_that_is_the_last_epoch_reads_same_weights_not_an_interval(digits_dir, tmp_path):
    """Validated on the last epoch only, every run's best epoch is its last: best.pt holds the last weights, and
    the table says so rather than printing an interval around a difference of zero by construction."""
    cfg = _demo_grid(tmp_path / "results", compare_checkpoints=["best"])
    cfg["variants"] = {"at": cfg["variants"]["at"]}
    cfg["run"]["validation"]["every"] = 10  # of 2 epochs: only the last is validated (validates_at)
    g = grid.load(cfg)
    paths = []
    for run in g.main:
        out = g.run_dir(run)
        train(config.from_dict({**run.config.to_dict(), "data_dir": str(digits_dir), "epochs": 2, "warmup_epochs": 1}),
              out, log=lambda _: None)
        info = json.loads((out / "run.json").read_text())
        assert info["best"]["epoch"] == info["epochs_completed"] == 2
        (out / "run.json").write_text(json.dumps({**info, "config": run.config.to_dict()}))
        for checkpoint in ("last", "best"):
            evaluate(out, ["natural", "pgd20"], n_examples=60, checkpoint=checkpoint, log=None)
            paths.append(out / ("metrics.json" if checkpoint == "last" else "metrics_best.json"))
    written = write_checkpoint_table(g, paths, tmp_path / "tables")
    best = pd.read_csv(written["csv"], dtype={"verdict": str}).query("checkpoint == 'best'")
    assert list(best["verdict"]) == ["same weights"] * 2 and best["diff_low"].isna().all()
    assert (best["diff"] == 0).all()  # the same weights give the same flags
    row = next(line for line in written["md"].read_text().splitlines() if line.startswith("| AT |"))
    assert row.split("|")[-3].strip() == "same weights (best epoch = last)" and "[" not in row


def test_same_weights_needs_every_run_of_the_row_to_peak_on_its_last_epoch():
    last, earlier = {"best": {"epoch": 3}, "epochs_completed": 3}, {"best": {"epoch": 2}, "epochs_completed": 3}
    assert same_weights("best", "last", [last, last]) and same_weights("last", "best", [last])
    assert not same_weights("best", "last", [last, earlier])  # one seed's best.pt is another epoch's weights
    assert not same_weights("ema", "last", [last]) and not same_weights("best", "last", [])
