"""The experiments beyond the main table: quadrant ε-maps, grid expansion, tables and figures.

Tables and figures are built from small real runs (small_cnn on the digits, 2 epochs, natural +
PGD-20 on 100 test images) and, for the paper's reference numbers (CIFAR-10), from synthetic
metrics.json files in the real layout.
"""

from __future__ import annotations

import contextlib
import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from part import config, experiments, grid
from part.config import ConfigError
from part.data import DeviceLoader, load_prepared, make_generator
from part.epsmap import EpsMapStore
from part.evaluate import evaluate
from part.importance import quadrant_mask
from part.train import train

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
    cfg["run"] = {"device": "cpu", "epochs": 2, "warmup_epochs": 1, "attack": {"steps": 2}}
    cfg["evaluation"]["attacks"] = ["natural", "pgd20", "mma"]
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


def test_expand_keeps_the_main_table_and_all_runs_adds_the_experiments():
    cfg = small_grid()
    grid.validate(cfg)
    assert [r.path for r in grid.expand(cfg)] == [f"digits/small_cnn/{v}/seed{s}" for v in ("at", "part_s1")
                                                  for s in (0, 1)]
    runs = grid.all_runs(cfg)
    assert len(runs) == 4 + 2 + 1  # part_s2 x 2 seeds, part_batch_index x 1; the part_s1 runs are the main table's
    assert runs["digits/small_cnn/part_s2/seed1"].config.mask.refresh_every == 2
    assert runs["digits/small_cnn/part_batch_index/seed0"].config.mask.pairing == "batch_index"


def test_reused_variants_read_the_same_runs_under_their_own_label():
    cfg = small_grid()
    exps = grid.experiments(cfg)
    rows = {row.key: row for row in exps["switches"].rows}
    assert (rows["default"].variant, rows["default"].label) == ("part_s1", "own map")
    assert (rows["again"].variant, rows["again"].label) == ("part_s2", "s = 2")  # another experiment's variant
    assert {row.key: row.label for row in exps["s_sweep"].rows}["s1"] == "PART (s = 1)"  # the main table's label
    main = {r.path: r for r in grid.expand(cfg)}
    for run in grid.experiment_runs(cfg, exps["switches"]):
        if run.variant == "part_s1":
            assert run == main[run.path]


def test_each_run_is_evaluated_with_the_union_of_its_tables_attacks():
    attacks = grid.run_attacks(small_grid())
    assert attacks["digits/small_cnn/part_s1/seed0"] == ["natural", "pgd20", "mma"]  # main table
    assert attacks["digits/small_cnn/part_s2/seed0"] == ["natural", "pgd20", "mma"]  # s_sweep ∪ switches
    assert attacks["digits/small_cnn/part_s2/seed1"] == ["natural", "pgd20"]  # s_sweep only (default attacks)
    assert attacks["digits/small_cnn/part_batch_index/seed0"] == ["natural", "mma"]


def test_a_variant_name_defined_twice_is_an_error_naming_both_keys():
    cfg = small_grid()
    cfg["experiments"]["s_sweep"]["variants"]["at"] = {"label": "x", "family": "AT", "run": {"method": "at"}}
    with pytest.raises(ConfigError, match=r"key 'experiments.s_sweep.variants.at'.*'variants.at'"):
        grid.validate(cfg)
    cfg = small_grid()
    cfg["experiments"]["switches"]["variants"]["part_s2"] = {"label": "x", "family": "AT", "run": {"method": "part"}}
    with pytest.raises(ConfigError, match=r"key 'experiments.switches.variants.part_s2'.*"
                                          r"'experiments.s_sweep.variants.part_s2'"):
        grid.validate(cfg)


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
        grid.validate(cfg)


def test_experiment_schema_errors_name_the_key():
    cfg = small_grid()
    cfg["experiments"]["switches"]["colour"] = "red"
    with pytest.raises(ConfigError, match="key 'experiments.switches'"):
        grid.validate(cfg)


@pytest.mark.parametrize("name", ["config.yaml", "configs/demo.yaml"])
def test_shipped_experiments_are_valid_and_reuse_main_runs(name):
    cfg = load(name)
    grid.validate(cfg)
    exps = grid.experiments(cfg)
    assert set(exps) == {"quadrant", "cam_methods", "eps_low_sweep", "s_sweep", "release_switches"}
    quadrant = grid.experiment_runs(cfg, exps["quadrant"])
    assert sorted(r.config.mask.recipe for r in quadrant) == ["quadrant_bl", "quadrant_br", "quadrant_ul", "quadrant_ur"]
    assert all(r.config.attack.eps_low == r.config.attack.eps / 2 and r.config.warmup_epochs == 0 for r in quadrant)
    main = {r.path for r in grid.expand(cfg)}
    for exp in ("cam_methods", "eps_low_sweep", "s_sweep", "release_switches"):
        assert any(r.path in main for r in grid.experiment_runs(cfg, exps[exp])), exp


# --- tables and figures from real runs ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_grid(digits_dir, tmp_path_factory):
    """Train and evaluate (natural + PGD-20 on 100 test images) every run the s sweep reads."""
    cfg = small_grid(tmp_path_factory.mktemp("results"), digits_dir)
    cfg["experiments"] = {"s_sweep": cfg["experiments"]["s_sweep"]}
    exp = grid.experiments(cfg)["s_sweep"]
    for run in grid.experiment_runs(cfg, exp):
        out = Path(cfg["results_dir"]) / run.path
        train(run.config, out, log=lambda _: None)
        evaluate(out, ["natural", "pgd20"], n_examples=100, log=None)
    return cfg


def test_sweep_table_has_x_accuracies_and_seconds_per_epoch(trained_grid):
    paths = experiments.write(trained_grid, "s_sweep")
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths.values())
    assert paths["png"].parent == Path(trained_grid["results_dir"]) / "experiments" / "s_sweep"
    wide = pd.read_csv(paths["csv"])
    assert list(wide.columns) == ["dataset", "arch", "s (PART epochs between ε-map refreshes)", "method", "Natural",
                                  "PGD-20", "s / epoch"]
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
    assert "s / epoch: training wall seconds per PART epoch" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["pdf"].read_bytes()[:5] == b"%PDF-"


def test_categorical_table_reads_the_same_runs(trained_grid):
    cfg = copy.deepcopy(trained_grid)
    cfg["experiments"]["labels"] = {"title": "two labels", "seeds": [0, 1],
                                    "variants": {"a": {"use": "part_s1", "label": "first"},
                                                 "b": {"use": "part_s2", "label": "second"}}}
    paths = experiments.write(cfg, "labels")
    wide = pd.read_csv(paths["csv"])
    assert list(wide.columns) == ["dataset", "arch", "method", "Natural", "PGD-20"]
    assert list(wide["method"]) == ["first", "second"]
    sweep = pd.read_csv(experiments.write(trained_grid, "s_sweep")["csv"])
    assert list(wide["Natural"]) == list(sweep["Natural"])


def test_missing_runs_and_unknown_experiments(tmp_path):
    cfg = small_grid(tmp_path)
    with pytest.raises(ValueError, match="experiments.switches: no metrics.json found"):
        experiments.write(cfg, "switches")
    with pytest.raises(KeyError, match="experiments.nope: no such experiment"):
        experiments.write(cfg, "nope")


# --- the paper's reference numbers (synthetic CIFAR-10 metrics) ----------------------------------------------

def fake_metrics(run, accuracies):
    return {"run": {"dataset": run.dataset, "model": run.arch, "method": run.config.method, "seed": run.seed},
            "attacks": {a: {"accuracy": acc, "n_examples": 10000, "settings": {"seed": 0}} for a, acc in accuracies.items()},
            "worst_case": {"accuracy": min(accuracies.values()), "n_examples": 10000}}


PAPER_FIGURE1 = pd.DataFrame({"low_budget_region": ["bottom_right", "upper_left"], "eps_low_region": ["6/255"] * 2,
                              "eps_other_regions": ["12/255"] * 2, "natural": [76.77, 78.00], "pgd20": [46.75, 47.69]})
"""The published values (paper-notes §5), so the table logic is tested apart from the shipped file."""


def test_quadrant_table_sets_the_paper_beside_ours(tmp_path, monkeypatch):
    monkeypatch.setattr(experiments.compare, "load_reference", lambda name: PAPER_FIGURE1 if name == "paper_figure1" else None)
    cfg = load("config.yaml")
    cfg["results_dir"] = str(tmp_path)
    cfg["experiments"] = {"quadrant": cfg["experiments"]["quadrant"]}
    exp = grid.experiments(cfg)["quadrant"]
    for i, run in enumerate(grid.experiment_runs(cfg, exp)):
        path = tmp_path / run.path / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(fake_metrics(run, {"natural": 77.0 + i, "pgd20": 46.0 + i})))
    paths = experiments.write(cfg, "quadrant")
    wide = pd.read_csv(paths["csv"], dtype=str, keep_default_na=False).set_index("method")
    assert list(wide.columns) == ["dataset", "arch", "Natural", "PGD-20", "Paper Natural", "Paper PGD-20"]
    assert list(wide.index) == ["upper left", "upper right", "bottom left", "bottom right"]
    assert wide.loc["upper left", ["Natural", "Paper Natural", "Paper PGD-20"]].tolist() == ["77.00", "78.00", "47.69"]
    assert wide.loc["bottom right", ["PGD-20", "Paper Natural", "Paper PGD-20"]].tolist() == ["49.00", "76.77", "46.75"]
    assert wide.loc["upper right", "Paper Natural"] == ""
    assert "Figure 1 of the paper" in paths["md"].read_text()
