"""The robustness curve and the convergence / gradient-masking checks (``part.evaluation.curve``, ``part.evaluation.sanity``), with
known answers: ε = 0 is natural accuracy exactly, ε = ε_eval is PGD-20 exactly, the curve does not rise beyond
its noise; a normally trained small CNN passes every check (Square finds nothing beyond the gradient attacks), the
same network behind an input-rounding layer (zero gradients everywhere) fails the black-box and the large-ε checks.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from part.attacks.autoattack_adapter import EvaluationWarning
from part.attacks.suite import evaluation_budget
from part.base import config
from part.base.torchfiles import load_torch
from part.data.prepared import load_prepared
from part.evaluation import results
from part.evaluation.curve import curve_spec
from part.evaluation.evaluate import evaluate
from part.evaluation.results import load_check, load_correct, merge_metrics
from part.evaluation.sanity import NOT_RUN, PASS, WARN, run_sanity, sanity_spec
from part.models import build_model
from part.training.train import train

N = 100
FAST = {"n_examples": N, "steps": 40, "restarts": 2, "apgd_iter": 50, "square_queries": 500}
"""The checks at test size: fewer steps, restarts and queries than the defaults, same code."""
CURVE = {"eps_255": [0, 12, 24, 36, 48], "large_eps_255": 96}


@pytest.fixture(scope="module")
def runs(digits_dir, tmp_path_factory):
    """Two normally trained small CNNs (seeds 0 and 1) on the digits: a model and its transfer source."""
    out = {}
    for seed in (0, 1):
        cfg = config.from_dict({"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu",
                                "method": "natural", "epochs": 3, "seed": seed})
        out[seed] = tmp_path_factory.mktemp(f"natural{seed}")
        train(cfg, out[seed], log=lambda _: None)
    return out


def test_curve_starts_at_natural_accuracy_and_meets_pgd20_at_the_evaluation_budget(runs):
    metrics = evaluate(runs[0], ["natural", "pgd20", "curve"], n_examples=N, curve=CURVE, log=None)
    entry, arrays = load_check(runs[0], "curve")
    natural, index = load_correct(runs[0], "natural")
    pgd20, _ = load_correct(runs[0], "pgd20")
    assert metrics["checks"]["curve"]["eps_255"] == entry["eps_255"] == [0, 12, 24, 36, 48, 96]
    assert arrays["correct"].shape == (6, N) and np.array_equal(arrays["index"], index)
    assert np.array_equal(arrays["eps_255"], [0, 12, 24, 36, 48, 96])
    assert np.array_equal(arrays["correct"][0], natural)  # ε = 0: natural accuracy, exactly
    assert entry["natural_accuracy"] == metrics["attacks"]["natural"]["accuracy"]
    assert np.array_equal(arrays["correct"][4], pgd20)  # ε = ε_eval (48/255): the table's PGD-20, exactly
    acc = np.array(entry["accuracy"])
    assert np.all(np.diff(acc) <= 100 * 2 / N)  # non-increasing up to two examples of noise
    assert acc[0] > 90 and acc[-1] == 0.0 and entry["large_eps_accuracy"] == 0.0
    steps = [p["steps"] for p in entry["settings"]["points"]]
    assert steps == [0, 20, 20, 20, 20, 40]  # 20 up to ε_eval, then ⌈20 ε / ε_eval⌉
    assert sum(i["n"] for i in entry["inversions"]) <= 2
    # the checks are never merged into metrics.json
    assert set(merge_metrics(runs[0])["attacks"]) == {"natural", "pgd20"}


def test_curve_spec_scales_with_the_dataset_budget():
    cifar = curve_spec("cifar10")
    assert [p["eps_255"] for p in cifar["points"]] == [0, 1, 2, 4, 6, 8, 10, 12, 16, 64]
    at8 = cifar["points"][5]
    assert (at8["eps"], at8["alpha"], at8["steps"]) == evaluation_budget("cifar10") + (20,)
    assert [p["eps_255"] for p in curve_spec("digits")["points"]] == [0, 6, 12, 24, 36, 48, 60, 72, 96, 255]
    with pytest.raises(ValueError, match="unknown parameter"):
        curve_spec("cifar10", {"eps": [1]})
    with pytest.raises(ValueError, match="above every ε"):
        curve_spec("cifar10", {"eps_255": [0, 8], "large_eps_255": 8})


def test_a_normally_trained_model_passes_every_check(runs):
    out = evaluate(runs[0], ["sanity"], sanity={**FAST, "transfer_from": str(runs[1])}, log=None)["checks"]["sanity"]
    entry, arrays = load_check(runs[0], "sanity")
    assert json.loads(json.dumps(out)) == entry
    assert {name: c["status"] for name, c in entry["checks"].items()} == {
        "convergence": PASS, "black_box": PASS, "large_eps": PASS, "transfer": PASS}
    assert entry["status"] == PASS and entry["checks"]["black_box"]["zero_gradient_examples"] == 0
    rows = list(arrays["rows"])
    assert rows == entry["rows"] == ["natural", "pgd20", "pgd_strong", "apgd_ce", "apgd_dlr", "whitebox", "square",
                                     "large_eps", "transfer"]
    correct = dict(zip(rows, arrays["correct"]))
    assert np.array_equal(correct["whitebox"], correct["natural"] & correct["pgd20"] & correct["pgd_strong"]
                          & correct["apgd_ce"] & correct["apgd_dlr"])
    assert not (correct["pgd_strong"] & ~correct["pgd20"]).any()  # the worst case of PGD-20 and the restarts
    transfer = entry["settings"]["attacks"]["transfer"]
    assert transfer["source_run"]["seed"] == 1 and transfer["source"] == str(runs[1])
    assert entry["checks"]["transfer"]["transfer_accuracy"] == pytest.approx(100 * correct["transfer"].mean())


class Rounded(nn.Module):
    """The classifier behind an input quantisation to 1/255 steps: the same predictions on 8-bit images, and
    a gradient of exactly zero everywhere — the textbook masked gradient (Athalye et al. 2018)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 255) / 255)


@pytest.fixture(scope="module")
def model_and_data(runs, digits_dir):
    model = build_model("small_cnn", 10, 1)
    model.load_state_dict(load_torch(runs[0] / "model.pt"))
    test = load_prepared(digits_dir / "digits.pt").test
    return model.eval(), test.images[:N].float() / 255, test.labels[:N]


def test_masked_gradients_fail_the_black_box_and_large_eps_checks(model_and_data):
    model, x, y = model_and_data
    spec = sanity_spec("digits", {**FAST, "steps": 20, "restarts": 1, "apgd_iter": 25, "square_queries": 300})
    with pytest.warns(EvaluationWarning, match="zero gradient"):  # AutoAttack's own check, via APGD
        result = run_sanity(Rounded(model).eval(), x, y, spec, log=None)
    checks = result.checks
    assert checks["black_box"]["status"] == WARN and checks["large_eps"]["status"] == WARN
    assert checks["transfer"]["status"] == NOT_RUN and result.status == WARN
    assert checks["black_box"]["zero_gradient_examples"] == N
    assert checks["black_box"]["square_only"] > N // 2  # Square breaks what no gradient attack can move
    assert checks["large_eps"]["large_eps_accuracy"] > 5.0  # a random image in the whole box, still correct


def test_a_stale_or_altered_check_result_is_refused(runs, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "model.pt", "run.json"):
        (run / name).write_bytes((runs[0] / name).read_bytes())
    evaluate(run, ["curve"], curve={**CURVE, "n_examples": 20}, log=None)
    entry, _ = load_check(run, "curve")
    assert entry["n_examples"] == 20 and entry["subset"] == "first 20 of digits test"
    (run / "model.pt").write_bytes((runs[1] / "model.pt").read_bytes())
    with pytest.raises(ValueError, match="another model.pt"):
        load_check(run, "curve")
    np.savez(run / "eval" / "curve.correct.npz", correct=np.zeros((6, 20), bool), index=np.arange(20))
    with pytest.raises(ValueError, match="not the ones it was written with"):
        load_check(run, "curve")
    with pytest.raises(FileNotFoundError, match="has not been evaluated"):
        load_check(run, "sanity")
    assert results.file_sha256(run / "model.pt")  # the run itself is untouched
