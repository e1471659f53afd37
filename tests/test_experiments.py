"""The experiments beyond the main table: quadrant ε-maps, grid expansion, tables and figures.

Tables and figures are built from small real runs (small_cnn on the digits, 2 epochs, natural +
PGD-20 on 100 test images) and, for the paper's reference numbers (CIFAR-10), from synthetic
metrics.json files in the real layout.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from part.analysis import aggregate, experiments
from part.analysis.aggregate import MismatchError
from part.base import config, grid
from part.base.config import ConfigError
from part.data.prepared import DeviceLoader, load_prepared, make_generator
from part.evaluation.evaluate import evaluate
from part.training.epsmap import EpsMapStore
from part.training.importance import quadrant_mask
from part.training.train import train

ROOT = Path(__file__).resolve().parents[1]


# --- the quadrant recipe --------------------------------------------------------------------------------------

@pytest.mark.parametrize("height,width,top,left", [(8, 8, 4, 4), (7, 5, 4, 3), (32, 33, 16, 17), (1, 1, 1, 1)])
@pytest.mark.parametrize("recipe", ["quadrant_ul", "quadrant_ur", "quadrant_bl", "quadrant_br"])
def test_quadrant_mask_lowers_exactly_one_quadrant(recipe, height, width, top, left):
    """Odd sides split as numpy.array_split does: the upper / left half takes the middle row / column."""
    mask = quadrant_mask(height, width, recipe)
    rows = slice(0, top) if recipe[-2] == "u" else slice(top, height)
    cols = slice(0, left) if recipe[-1] == "l" else slice(left, width)
    expected = torch.ones(1, 1, height, width, dtype=torch.bool)
    expected[..., rows, cols] = False
    assert mask.dtype == torch.bool and torch.equal(mask, expected)


def test_quadrant_masks_tile_the_image():
    masks = [~quadrant_mask(7, 9, r) for r in ("quadrant_ul", "quadrant_ur", "quadrant_bl", "quadrant_br")]
    assert torch.equal(sum(m.int() for m in masks), torch.ones(1, 1, 7, 9, dtype=torch.int))
    with pytest.raises(ValueError, match="'quadrant_xx'.*'quadrant_ul'"):
        quadrant_mask(4, 4, "quadrant_xx")


def test_quadrant_eps_map_ignores_crop_flip_and_cam(digits_dir):
    """ε_low on the chosen quadrant of the input the model sees, ε elsewhere, for every augmented batch."""
    cfg = config.from_dict({"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu", "method": "part",
                            "warmup_epochs": 0, "attack": {"eps": "12/255", "eps_low": "6/255"},
                            "mask": {"recipe": "quadrant_br"}})
    train_split = load_prepared(digits_dir / "digits.pt").train
    loader = DeviceLoader(train_split, 64, "cpu", shuffle=True, crop_padding=2, flip=True)
    store = EpsMapStore(cfg)
    store.refresh(model=None, loader=loader, epoch=0, autocast=contextlib.nullcontext)  # no model: no CAM
    expected = torch.full((1, 1, 8, 8), 12 / 255, dtype=torch.float32)
    expected[..., 4:, 4:] = 6 / 255
    for batch in loader.epoch(make_generator("cpu", 0, 0, 1)):
        eps = store.for_batch(batch)
        assert eps.shape == (len(batch.y), 1, 8, 8)
        assert torch.equal(eps, expected.expand_as(eps))


def test_quadrant_training_spends_full_eps_on_three_quarters(digits_dir, tmp_path):
    cfg = config.from_dict({"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu", "method": "part",
                            "epochs": 1, "warmup_epochs": 0, "attack": {"steps": 2}, "mask": {"recipe": "quadrant_ul"}})
    info = train(cfg, tmp_path, log=lambda _: None)
    assert info["final"]["phase"] == "part" and info["final"]["full_eps_share"] == pytest.approx(0.75)


# --- grid expansion -------------------------------------------------------------------------------------------

def load(name):
    return yaml.safe_load((ROOT / name).read_text())


def small_grid(results_dir="results", prepared_dir="data/prepared"):
    """The demo's main table cut to two variants, plus experiments that reuse one of them."""
    cfg = load("configs/demo.yaml")
    cfg.update(results_dir=str(results_dir), seeds=[0, 1])
    cfg["data"]["prepared_dir"] = str(prepared_dir)
    cfg["variants"] = {k: cfg["variants"][k] for k in ("at", "part_s1")}
    for check in ("robustness_curve", "sanity"):
        cfg["evaluation"][check]["variants"] = None  # every one of the two kept
    cfg["run"] = {"device": "cpu", "epochs": 2, "warmup_epochs": 1, "attack": {"steps": 2}}
    cfg["evaluation"].update(attacks=["natural", "pgd20", "mma"], compare_checkpoints=[])
    cfg["experiments"] = {
        "s_sweep": {"title": "s sweep", "x": "mask.refresh_every", "timing": True, "seeds": [0, 1],
                    "variants": {"s1": "part_s1",
                                 "part_s2": {"label": "PART (s = 2)", "family": "AT",
                                             "run": {"method": "part", "mask": {"refresh_every": 2}}}}},
        "switches": {"title": "switches", "seeds": [0], "attacks": ["natural", "mma"],
                     "variants": {"default": {"use": "part_s1", "label": "own map"},
                                  "part_batch_index": {"label": "batch index", "family": "AT",
                                                       "run": {"method": "part", "mask": {"pairing": "batch_index"}}},
                                  "again": {"use": "part_s2", "label": "s = 2"}}},
    }
    return cfg


def test_the_grid_keeps_the_main_table_and_its_runs_add_the_experiments():
    g = grid.load(small_grid())
    assert [r.path for r in g.main] == [f"digits/small_cnn/{v}/seed{s}" for v in ("at", "part_s1") for s in (0, 1)]
    runs = g.runs
    assert len(runs) == 4 + 2 + 1  # part_s2 x 2 seeds, part_batch_index x 1; the part_s1 runs are the main table's
    assert runs["digits/small_cnn/part_s2/seed1"].config.mask.refresh_every == 2
    assert runs["digits/small_cnn/part_batch_index/seed0"].config.mask.pairing == "batch_index"


def test_reused_variants_read_the_same_runs_under_their_own_label():
    g = grid.load(small_grid())
    exps = g.experiments
    rows = {row.key: row for row in exps["switches"].rows}
    assert (rows["default"].variant, rows["default"].label) == ("part_s1", "own map")
    assert (rows["again"].variant, rows["again"].label) == ("part_s2", "s = 2")  # another experiment's variant
    assert {row.key: row.label for row in exps["s_sweep"].rows}["s1"] == "PART (s = 1)"  # the main table's label
    main = {r.path: r for r in g.main}
    for run in g.experiment_runs["switches"]:
        if run.variant == "part_s1":
            assert run is main[run.path]  # built once, whichever tables read it


def test_each_run_is_evaluated_with_the_union_of_its_tables_attacks():
    attacks = grid.load(small_grid()).attacks
    assert attacks["digits/small_cnn/part_s1/seed0"] == ("natural", "pgd20", "mma")  # main table
    assert attacks["digits/small_cnn/part_s2/seed0"] == ("natural", "pgd20", "mma")  # s_sweep ∪ switches
    assert attacks["digits/small_cnn/part_s2/seed1"] == ("natural", "pgd20")  # s_sweep only (default attacks)
    assert attacks["digits/small_cnn/part_batch_index/seed0"] == ("natural", "mma")


def test_a_variant_name_defined_twice_is_an_error_naming_both_keys():
    cfg = small_grid()
    cfg["experiments"]["s_sweep"]["variants"]["at"] = {"label": "x", "family": "AT", "run": {"method": "at"}}
    with pytest.raises(ConfigError, match=r"key 'experiments.s_sweep.variants.at'.*'variants.at'"):
        grid.load(cfg)
    cfg = small_grid()
    cfg["experiments"]["switches"]["variants"]["part_s2"] = {"label": "x", "family": "AT", "run": {"method": "part"}}
    with pytest.raises(ConfigError, match=r"key 'experiments.switches.variants.part_s2'.*"
                                          r"'experiments.s_sweep.variants.part_s2'"):
        grid.load(cfg)


@pytest.mark.parametrize("edit,message", [
    (lambda e: e["variants"].update(ghost="part_s7"), r"'experiments.switches.variants.ghost': uses 'part_s7'"),
    (lambda e: e["variants"].update(twice={"use": "part_s1"}), r"variants.twice': reads the runs of 'part_s1'"),
    (lambda e: e.update(attacks=["aa"]), r"'experiments.switches.attacks': \['aa'\] not in evaluation.attacks"),
    (lambda e: e.update(datasets=["cifar10"]), r"'experiments.switches.datasets': \['cifar10'\] not in datasets"),
    (lambda e: e.update(x="cam.method"), r"'experiments.switches.x': 'cam.method' is 'gradcam'.*needs a number"),
    (lambda e: e.update(x="mask.refresh"), r"'experiments.switches.x': 'mask.refresh' is not a run-config key"),
    (lambda e: e["variants"]["part_batch_index"]["run"].update(methd="part"),
     r"experiments.switches: .*variants.part_batch_index.*key 'methd'"),
])
def test_experiment_mistakes_stop_the_grid_and_name_the_key(edit, message):
    cfg = small_grid()
    edit(cfg["experiments"]["switches"])
    with pytest.raises(ConfigError, match=message):
        grid.load(cfg)


def test_experiment_schema_errors_name_the_key():
    cfg = small_grid()
    cfg["experiments"]["switches"]["colour"] = "red"
    with pytest.raises(ConfigError, match=r"key 'experiments.switches.colour': unknown key \(allowed here: attacks, "
                                          r"datasets, reference, seeds, timing, title, variants, x\)"):
        grid.load(cfg)


@pytest.mark.parametrize("name", ["config.yaml", "configs/demo.yaml"])
def test_shipped_experiments_are_valid_and_reuse_main_runs(name):
    g = grid.load(load(name))
    assert set(g.experiments) == {"quadrant", "cam_methods", "eps_low_sweep", "s_sweep", "release_switches",
                                  "ae_generator"}
    quadrant = g.experiment_runs["quadrant"]
    assert sorted(r.config.mask.recipe for r in quadrant) == ["quadrant_bl", "quadrant_br", "quadrant_ul", "quadrant_ur"]
    assert all(r.config.attack.eps_low == r.config.attack.eps / 2 and r.config.warmup_epochs == 0 for r in quadrant)
    main = {r.path for r in g.main}
    for exp in ("cam_methods", "eps_low_sweep", "s_sweep", "release_switches", "ae_generator"):
        assert any(r.path in main for r in g.experiment_runs[exp]), exp
    generators = {r.variant: r.config for r in g.experiment_runs["ae_generator"]}
    assert sorted(generators) == ["part_mma", "part_s1"] and len(g.experiment_runs["ae_generator"]) == 2
    pgd, mma = generators["part_s1"], generators["part_mma"]
    assert (pgd.attack.generator, mma.attack.generator) == ("pgd", "mma")
    assert mma == dataclasses.replace(pgd, attack=dataclasses.replace(pgd.attack, generator="mma"))  # one switch


# --- tables and figures from real runs ------------------------------------------------------------------------

def write_existing(cfg, name):
    """What the workflow's experiment job does, its inputs globbed instead of declared: the files the runs have."""
    g = grid.load(cfg)
    runs = g.experiment_runs.get(name, ())
    return experiments.write(g, name, aggregate.existing_metrics(g, runs), g.existing("log.jsonl", runs))


@pytest.fixture(scope="module")
def trained_grid(digits_dir, tmp_path_factory):
    """Train and evaluate (natural + PGD-20 on 100 test images) every run the s sweep reads."""
    cfg = small_grid(tmp_path_factory.mktemp("results"), digits_dir)
    cfg["experiments"] = {"s_sweep": cfg["experiments"]["s_sweep"]}
    for run in grid.load(cfg).experiment_runs["s_sweep"]:
        out = Path(cfg["results_dir"]) / run.path
        train(run.config, out, log=lambda _: None)
        evaluate(out, ["natural", "pgd20"], n_examples=100, log=None)
    return cfg


def test_sweep_table_has_x_accuracies_and_seconds_per_epoch(trained_grid):
    paths = write_existing(trained_grid, "s_sweep")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert paths["png"].parent == Path(trained_grid["results_dir"]) / "experiments" / "s_sweep"
    wide = pd.read_csv(paths["csv"])
    assert list(wide.columns) == ["dataset", "arch", "s (PART epochs between ε-map refreshes)", "method", "Natural",
                                  "PGD-20", "sec / epoch"]  # s is the refresh interval, never seconds
    assert list(wide["method"]) == ["PART (s = 1)", "PART (s = 2)"] and wide["Natural"].str.contains("±").all()
    summary = pd.read_csv(paths["summary"])
    assert set(summary["attack"]) == {"natural", "pgd20", experiments.TIME}
    assert (summary["n_seeds"] == 2).all() and sorted(set(summary["x"])) == [1.0, 2.0]
    per_seed = pd.read_csv(paths["per_seed"])
    run_dir = Path(trained_grid["results_dir"]) / "digits/small_cnn/part_s2/seed1"
    log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    part_seconds = [r["seconds"] for r in log if r["phase"] == "part"]
    timing = per_seed[(per_seed["attack"] == experiments.TIME) & (per_seed["variant"] == "part_s2")
                      & (per_seed["seed"] == 1)]
    assert timing["accuracy"].item() == pytest.approx(sum(part_seconds) / len(part_seconds))
    text = paths["md"].read_text()
    header = next(line for line in text.splitlines() if line.startswith("| dataset"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(wide.columns)
    assert "sec / epoch: training wall seconds per PART epoch" in text
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["pdf"].read_bytes()[:5] == b"%PDF-"


def test_categorical_table_reads_the_same_runs(trained_grid):
    cfg = copy.deepcopy(trained_grid)
    cfg["experiments"]["labels"] = {"title": "two labels", "seeds": [0, 1],
                                    "variants": {"a": {"use": "part_s1", "label": "first"},
                                                 "b": {"use": "part_s2", "label": "second"}}}
    paths = write_existing(cfg, "labels")
    wide = pd.read_csv(paths["csv"])
    assert list(wide.columns) == ["dataset", "arch", "method", "Natural", "PGD-20"]
    assert list(wide["method"]) == ["first", "second"]
    sweep = pd.read_csv(write_existing(trained_grid, "s_sweep")["csv"])
    assert list(wide["Natural"]) == list(sweep["Natural"])


def test_missing_runs_and_unknown_experiments(tmp_path):
    cfg = small_grid(tmp_path)
    with pytest.raises(ValueError, match="experiments.switches: no metrics.json given"):
        write_existing(cfg, "switches")
    with pytest.raises(KeyError, match="experiments.nope: no such experiment"):
        write_existing(cfg, "nope")


def test_a_declared_input_that_is_missing_or_foreign_is_an_error(trained_grid, tmp_path):
    """The workflow declares every file a table reads: none is skipped, none outside the experiment is taken."""
    g = grid.load(trained_grid)
    declared = [g.run_dir(r) / "metrics.json" for r in g.experiment_runs["s_sweep"]]
    logs = [g.run_dir(r) / "log.jsonl" for r in g.experiment_runs["s_sweep"]]
    absent = g.results_dir / "digits/small_cnn/part_s2/seed7/metrics.json"
    with pytest.raises(ConfigError, match="not in a run directory of this grid"):
        experiments.write(g, "s_sweep", [*declared, absent], logs)
    gone = tmp_path / "results"
    with pytest.raises(ConfigError, match="not in a run directory of this grid"):
        experiments.write(g, "s_sweep", [gone / "x.json"], logs)
    at = g.results_dir / "digits/small_cnn/at/seed0/metrics.json"
    with pytest.raises(ValueError, match="variant 'at', which is not a row of this table"):
        experiments.write(g, "s_sweep", [*declared, at], logs)
    with pytest.raises(ValueError, match=r"timing: no log.jsonl given for the runs \[\('digits', 'part_s1', 0\)"):
        experiments.write(g, "s_sweep", declared, logs[1:])
    cut = copy.deepcopy(trained_grid)
    cut["results_dir"] = str(tmp_path / "empty")
    g_cut = grid.load(cut)
    with pytest.raises(FileNotFoundError, match="part_s1/seed0/metrics.json: missing; the table reads it"):
        experiments.write(g_cut, "s_sweep", [g_cut.run_dir(r) / "metrics.json" for r in g_cut.experiment_runs["s_sweep"]])


# --- the paper's reference numbers (synthetic CIFAR-10 metrics) ----------------------------------------------

def fake_metrics(run, accuracies, attack_seed=0):
    entry = {"n_examples": 10000, "subset": "first 10000 of cifar10 test", "split": "test", "precision": "fp32",
             "checkpoint": "last", "settings": {"seed": attack_seed}}
    return {"run": {"dataset": run.dataset, "model": run.arch, "method": run.config.method, "seed": run.seed},
            "checkpoint": "last",
            "attacks": {a: {"accuracy": acc, **entry} for a, acc in accuracies.items()},
            "worst_case": {"accuracy": min(accuracies.values()), "n_examples": 10000}}


def write_fake_runs(g, name, attack_seeds=None):
    """metrics.json (+ run.json, which the consistency check reads) for every run of an experiment."""
    for i, run in enumerate(g.experiment_runs[name]):
        path = g.run_dir(run) / "metrics.json"
        path.parent.mkdir(parents=True)
        seed = (attack_seeds or {}).get(i, 0)
        path.write_text(json.dumps(fake_metrics(run, {"natural": 77.0 + i, "pgd20": 46.0 + i}, seed)))
        (path.parent / "run.json").write_text(json.dumps({"config": run.config.to_dict()}))


PAPER_FIGURE1 = pd.DataFrame({"low_budget_region": ["bottom_right", "upper_left"], "eps_low_region": ["6/255"] * 2,
                              "eps_other_regions": ["12/255"] * 2, "natural": [76.77, 78.00], "pgd20": [46.75, 47.69]})
"""The published values (paper-notes §5), so the table logic is tested apart from the shipped file."""


def test_quadrant_table_sets_the_paper_beside_ours(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments.compare, "load_reference", lambda name: PAPER_FIGURE1 if name == "paper_figure1" else None)
    cfg = load("config.yaml")
    cfg["results_dir"] = str(tmp_path)
    cfg["experiments"] = {"quadrant": cfg["experiments"]["quadrant"]}
    write_fake_runs(grid.load(cfg), "quadrant")
    paths = write_existing(cfg, "quadrant")
    wide = pd.read_csv(paths["csv"], dtype=str, keep_default_na=False).set_index("method")
    assert list(wide.columns) == ["dataset", "arch", "Natural", "PGD-20", "Paper Natural", "Paper PGD-20"]
    assert list(wide.index) == ["upper left", "upper right", "bottom left", "bottom right"]
    assert wide.loc["upper left", ["Natural", "Paper Natural", "Paper PGD-20"]].tolist() == ["77.00", "78.00", "47.69"]
    assert wide.loc["bottom right", ["PGD-20", "Paper Natural", "Paper PGD-20"]].tolist() == ["49.00", "76.77", "46.75"]
    assert wide.loc["upper right", "Paper Natural"] == ""
    assert "Figure 1 of the paper" in paths["md"].read_text()


def test_experiment_tables_refuse_runs_measured_differently(tmp_path):
    """As the main table does: rows whose attack settings differ are not averaged or set side by side."""
    cfg = load("config.yaml")
    cfg["results_dir"] = str(tmp_path)
    cfg["experiments"] = {"quadrant": cfg["experiments"]["quadrant"]}
    write_fake_runs(grid.load(cfg), "quadrant", attack_seeds={2: 1})
    with pytest.raises(MismatchError, match=r"the runs of cifar10/resnet18, attack 'natural'.*settings.seed: 0 vs 1"):
        write_existing(cfg, "quadrant")


def test_part_tables_writes_what_a_partial_grid_has(trained_grid, tmp_path, capsys):
    """``part tables``: the main table of the runs evaluated so far (AT is not), and each experiment's."""
    from part.cli import main

    cfg = copy.deepcopy(trained_grid)
    cfg["experiments"]["labels"] = {"title": "labels", "variants": {"a": {"use": "part_s1", "label": "first"}}}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))  # config order is row order
    results = Path(cfg["results_dir"])
    def written():
        return {p: p.stat().st_mtime_ns for sub in ("tables", "experiments") for p in (results / sub).rglob("*")}

    before = written()
    main(["tables", "--configfile", str(tmp_path / "grid.yaml"), "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "main table: 2/4 runs evaluated" in out and "experiment s_sweep: 4/4 runs evaluated" in out
    main_csv = pd.read_csv(tmp_path / "out" / "tables" / "main.csv").set_index("variant")
    assert main_csv.loc["at", "natural_n_seeds"] == 0 and main_csv.loc["part_s1", "natural_n_seeds"] == 2
    sweep = pd.read_csv(tmp_path / "out" / "experiments" / "s_sweep" / "s_sweep.csv")
    assert list(sweep["method"]) == ["PART (s = 1)", "PART (s = 2)"] and "sec / epoch" in sweep
    assert {p.name for p in (tmp_path / "out" / "experiments" / "labels").iterdir()} >= {"labels.md", "labels.png"}
    # --out is honoured for every file: nothing new below the config's results_dir
    assert written() == before
