import copy
from pathlib import Path

import pytest
import yaml

from part.base import grid
from part.base.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def load(name):
    return yaml.safe_load((ROOT / name).read_text())


def test_the_paper_grid_expands_to_one_run_per_dataset_variant_seed():
    g = grid.load(load("config.yaml"))
    runs = g.main
    assert len(runs) == 3 * 9 * 3
    by_path = {r.path: r for r in runs}
    tin = by_path["tinyimagenet200/wrn34_10/part_trades_s10/seed2"].config
    assert (tin.model, tin.method, tin.mask.refresh_every, tin.seed) == ("wrn34_10", "part_trades", 10, 2)
    svhn = by_path["svhn/resnet18/mart/seed0"].config
    assert svhn.attack.alpha == pytest.approx(1 / 255) and svhn.optim.weight_decay == 3.5e-3


@pytest.mark.parametrize("name", ["configs/demo.yaml", "configs/fashion_mnist.yaml"])
def test_shipped_configs_are_valid(name):
    """Each shipped grid loads and expands to what its YAML says: one run per dataset × variant × seed, with
    the dataset's arch, the seed, and the variant's method where it names one."""
    raw = load(name)
    runs = grid.load(raw).main
    expected = {(d, v, s) for d in raw["datasets"] for v in raw["variants"] for s in raw["seeds"]}
    assert len(runs) == len(expected) and {(r.dataset, r.variant, r.seed) for r in runs} == expected
    for r in runs:
        assert (r.config.dataset, r.config.model, r.config.seed) == (r.dataset, raw["datasets"][r.dataset]["arch"], r.seed)
        method = raw["variants"][r.variant].get("run", {}).get("method")
        assert method is None or r.config.method == method


def test_a_typo_in_the_grid_names_the_key():
    cfg = load("config.yaml")
    cfg["variants"]["part_s1"]["run"]["mask"]["refresh_evry"] = 1
    with pytest.raises(ConfigError, match=r"variants.part_s1 x seed 0\): key 'mask.refresh_evry'"):
        grid.load(cfg)


@pytest.mark.parametrize("entry, key, allowed", [
    ({"label": "XGradCAM", "family": "AT", "run": {"method": "part"}, "lable": "x"}, "lable", "family, label, run"),
    ({"use": "part_s1", "lable": "x"}, "lable", "label, use"),
    ({"uses": "part_s1"}, "uses", "family, label, run"),
])
def test_a_typo_in_an_experiment_variant_names_the_experiment_the_variant_and_the_key(entry, key, allowed):
    """A variant of its own and a reused one (``use``) are told apart before validation, so the error is the
    unknown key of the entry meant, not 'valid under none of the given schemas'."""
    cfg = load("configs/demo.yaml")
    cfg["experiments"]["cam_methods"]["variants"]["gradcam"] = entry
    with pytest.raises(ConfigError) as err:
        grid.load(cfg, source="demo.yaml")
    assert str(err.value) == (f"demo.yaml: key 'experiments.cam_methods.variants.gradcam.{key}': unknown key "
                              f"(allowed here: {allowed})")


def test_an_unknown_method_or_bad_budget_stops_before_any_job():
    cfg = load("config.yaml")
    bad = copy.deepcopy(cfg)
    bad["variants"]["at"]["run"]["method"] = "pgd_at"
    with pytest.raises(ConfigError, match="key 'method': got 'pgd_at'"):
        grid.load(bad)
    bad = copy.deepcopy(cfg)
    bad["datasets"]["svhn"]["run"] = {"attack": {"eps_low": "9/255"}}
    with pytest.raises(ConfigError, match=r"datasets.svhn .*key 'attack.eps_low'.*eps_low <= eps"):
        grid.load(bad)


def test_workflow_level_schema_errors():
    cfg = load("config.yaml")
    cfg["evaluation"]["attacks"].append("cw")
    with pytest.raises(ConfigError, match="key 'evaluation.attacks.5'"):
        grid.load(cfg)
    cfg = load("config.yaml")
    cfg["datasets"]["imagenet"] = {"arch": "resnet18"}
    with pytest.raises(ConfigError, match="key 'datasets'"):
        grid.load(cfg)
