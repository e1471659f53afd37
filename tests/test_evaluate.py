"""Evaluation on a small_cnn adversarially trained on the digits for a few CPU seconds.

The MMA selection rule (largest final margin among k = 3 targets) is pinned on a hand-computable
linear model in tests/test_attacks.py; here the evaluation around it is tested.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings

import jsonschema
import numpy as np
import pytest
import torch
from torch import nn

from conftest import NARROW, NARROW_LR
from part.attacks.autoattack_adapter import MM3, EvaluationWarning, ReleaseAutoAttack, StandardAutoAttack
from part.attacks.pgd import MMA, PGD
from part.attacks.suite import BATCH_SIZE, attack_specs, evaluation_budget
from part.base import config
from part.base.torchfiles import load_torch
from part.base.vocabulary import ATTACKS
from part.cli import main
from part.data.prepared import load_prepared
from part.evaluation.evaluate import check_accuracies, evaluate, run_attack
from part.evaluation.results import load_correct, merge_metrics, metrics_schema
from part.models import build_model
from part.training.train import train

N = 40  # test examples per evaluation: enough for the checks, keeps standard AA to seconds
EPS, ALPHA = evaluation_budget("digits")


@pytest.fixture(scope="module")
def at_run(digits_dir, tmp_path_factory):
    cfg = config.from_dict({"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu", "method": "at",
                            "width": NARROW, "epochs": 6, "optim": {"lr": NARROW_LR}})
    out = tmp_path_factory.mktemp("at_run")
    train(cfg, out, log=lambda _: None)
    return out


@pytest.fixture
def run_copy(at_run, tmp_path):
    """A private copy of the trained run, for tests that write evaluation files."""
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.json", "model.pt", "run.json"):
        shutil.copy(at_run / name, out / name)
    return out


@pytest.fixture(scope="module")
def evaluated(at_run):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = evaluate(at_run, ATTACKS, n_examples=N, log=None)
    return metrics, [w for w in caught if issubclass(w.category, EvaluationWarning)]


@pytest.fixture(scope="module")
def model_and_data(at_run, digits_dir):
    model = build_model("small_cnn", 10, 1, NARROW)
    model.load_state_dict(load_torch(at_run / "model.pt"))
    test = load_prepared(digits_dir / "digits.pt").test
    return model.eval(), test.images[:N].float() / 255, test.labels[:N]


def test_metrics_follow_the_schema_and_record_what_ran(evaluated, at_run):
    metrics, _ = evaluated
    jsonschema.validate(metrics, metrics_schema())
    assert json.loads((at_run / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert list(metrics["attacks"]) == list(ATTACKS)
    assert metrics["table_attacks"] == ["natural", "pgd20", "mma", "aa"]
    assert metrics["run"] == {"dataset": "digits", "model": "small_cnn", "method": "at", "seed": 0}
    assert metrics["checkpoint_sha256"] == hashlib.sha256((at_run / "model.pt").read_bytes()).hexdigest()
    assert metrics["environment"]["versions"]["pyautoattack"] == "0.2.0"
    s = {name: e["settings"] for name, e in metrics["attacks"].items()}
    assert (s["pgd20"]["steps"], s["pgd20"]["loss"], s["pgd20"]["restarts"]) == (20, "ce", 1)
    assert s["pgd20"]["eps"] == pytest.approx(48 / 255) and s["pgd20"]["alpha"] == pytest.approx(12 / 255)
    assert (s["mma"]["k"], s["mma"]["steps"], s["mma"]["confidence"]) == (3, 20, 50.0)
    assert s["aa"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and s["aa"]["eps"] == pytest.approx(EPS)
    for name, entry in metrics["attacks"].items():
        assert json.loads((at_run / "eval" / f"{name}.json").read_text()) == entry
        assert entry["n_examples"] == N and entry["seconds"] >= 0 and entry["precision"] == "fp32"


def test_per_example_results_merge_into_the_worst_case(evaluated, at_run):
    metrics, _ = evaluated
    arrays = {}
    for name, entry in metrics["attacks"].items():
        correct, index = load_correct(at_run, name)
        assert correct.dtype == bool and np.array_equal(index, np.arange(N))
        assert int(correct.sum()) == entry["n_correct"] and 100 * correct.mean() == pytest.approx(entry["accuracy"])
        arrays[name] = correct
    survivors = np.logical_and.reduce(list(arrays.values()))
    assert metrics["worst_case"]["n_correct"] == int(survivors.sum()) and metrics["worst_case"]["n_examples"] == N
    assert metrics["worst_case"]["accuracy"] <= min(e["accuracy"] for e in metrics["attacks"].values())


def test_attacks_lower_accuracy_and_aa_is_at_least_as_strong_as_pgd20(evaluated):
    metrics, caught = evaluated
    acc = {name: e["accuracy"] for name, e in metrics["attacks"].items()}
    assert acc["natural"] > 80
    for name in ("pgd20", "mma", "mm3", "aa", "aa_release"):
        assert acc[name] < acc["natural"], name
        assert metrics["attacks"][name]["natural_accuracy"] == acc["natural"]
    assert acc["aa"] <= acc["pgd20"] + 1
    assert not [str(w.message) for w in caught if "chance" in str(w.message) or "above natural" in str(w.message)]


@pytest.mark.parametrize("name", ["pgd20", "mma", "mm3", "aa", "aa_release"])
def test_zero_budget_leaves_natural_accuracy(model_and_data, name):
    model, x, y = model_and_data
    spec = attack_specs(0.0, ALPHA)[name]
    n = 4 if name.startswith("aa") else N  # AutoAttack's Square spends its 5 000 queries on every robust point
    result = run_attack(model, x[:n], y[:n], name, spec, log=None)
    assert torch.equal(result.correct, result.natural_correct)


@pytest.fixture(scope="module")
def seeded_autoattack(model_and_data):
    """Standard AutoAttack (seed 3) on 10 images, twice, and whether the first run left the global RNG alone:
    the seeding test and the budget test read the same runs (each costs seconds)."""
    model, x, y = model_and_data
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = StandardAutoAttack(model, EPS, device="cpu", seed=3, batch_size=BATCH_SIZE).perturb(x[:10], y[:10])
    rng_untouched = torch.equal(torch.get_rng_state(), state)
    second = StandardAutoAttack(model, EPS, device="cpu", seed=3, batch_size=BATCH_SIZE).perturb(x[:10], y[:10])
    return first, second, rng_untouched


def test_adversarial_examples_stay_in_the_ball_and_the_box(model_and_data, seeded_autoattack):
    model, x, y = model_and_data
    g = torch.Generator().manual_seed(0)
    attacks = [PGD(EPS, ALPHA, 20), MMA(EPS, ALPHA, steps=20, k=3), MM3(EPS)]
    advs = [a(model, x, y, generator=g) for a in attacks]
    advs.append(seeded_autoattack[0])
    advs.append(ReleaseAutoAttack(EPS)(model, x[:10], y[:10]))
    for x_adv in advs:
        delta = (x_adv - x[:len(x_adv)]).abs()
        assert delta.max() <= EPS + 1e-6 and delta.max() > EPS / 2
        assert x_adv.min() >= 0 and x_adv.max() <= 1


def test_release_autoattack_is_the_call_of_the_release(evaluated, model_and_data, at_run):
    """The paper's AA column: torchattacks' AutoAttack(model, norm='Linf', eps=ε, version='standard') as the
    release calls it — 10 iterations per APGD/FAB attack, 9 targets, Square 5 000 queries — but seeded."""
    import torchattacks

    metrics, _ = evaluated
    s = metrics["attacks"]["aa_release"]["settings"]
    assert (s["kind"], s["package"], s["package_version"], s["version"]) == (
        "torchattacks_autoattack", "torchattacks", "3.5.1", "standard")
    assert s["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"] and s["eps"] == pytest.approx(EPS)
    assert (s["apgd-ce"]["n_iter"], s["apgd-ce"]["loss"], s["apgd-ce"]["n_restarts"]) == (10, "ce", 1)
    assert (s["apgd-t"]["n_iter"], s["apgd-t"]["n_target_classes"], s["apgd-t"]["n_restarts"]) == (10, 9, 1)
    assert (s["fab-t"]["n_iter"], s["fab-t"]["n_target_classes"], s["fab-t"]["multi_targeted"]) == (10, 9, True)
    assert (s["square"]["n_queries"], s["square"]["p_init"]) == (5000, 0.8)
    assert metrics["environment"]["versions"]["torchattacks"] == "3.5.1"
    # the same examples fall as under the package's own object, built as the release builds it
    model, x, y = model_and_data
    reference = torchattacks.AutoAttack(model, norm="Linf", eps=EPS, version="standard", seed=0)
    with torch.random.fork_rng():
        x_ref = reference(x, y)
    expected = (model(x_ref).argmax(1) == y).numpy()
    correct, _ = load_correct(at_run, "aa_release")
    assert np.array_equal(correct, expected)


def test_autoattack_is_seeded_and_leaves_the_global_rng_alone(seeded_autoattack):
    first, second, rng_untouched = seeded_autoattack
    assert rng_untouched
    assert torch.equal(first, second)


def test_autoattack_adapter_runs_the_standard_preset(model_and_data, monkeypatch):
    """Spy on the four sub-attacks: what runs, in which order, with which settings at call time."""
    model, x, y = model_and_data
    adapter = StandardAutoAttack(model, EPS, device=torch.device("cpu"), seed=0, batch_size=64)
    aa = adapter.aa
    calls = []

    def spy(name, obj, keys):
        def perturb(x_batch, y_batch, *args, **kwargs):
            calls.append((name, {k: getattr(obj, k) for k in keys}))
            return x_batch  # nothing fooled: every point goes on to the next attack
        monkeypatch.setattr(obj, "perturb", perturb)

    spy("apgd", aa.apgd, ["loss", "n_iter", "n_restarts", "eps", "norm", "seed", "device"])
    spy("apgd-t", aa.apgd_targeted, ["loss", "n_iter", "n_restarts", "n_target_classes", "eps", "seed"])
    spy("fab", aa.fab, ["targeted", "n_iter", "n_restarts", "n_target_classes", "eps", "seed"])
    spy("square", aa.square, ["n_queries", "n_restarts", "p_init", "eps", "seed"])
    adapter.perturb(x, y)
    assert [name for name, _ in calls] == ["apgd", "apgd-t", "fab", "square"]
    apgd, apgd_t, fab, square = (c for _, c in calls)
    assert {k: v for k, v in apgd.items() if k != "eps"} == {"loss": "ce", "n_iter": 100, "n_restarts": 1,
                                                            "norm": "Linf", "seed": 0, "device": torch.device("cpu")}
    assert (apgd_t["loss"], apgd_t["n_iter"], apgd_t["n_restarts"], apgd_t["n_target_classes"]) == (
        "dlr-targeted", 100, 1, 9)
    assert (fab["targeted"], fab["n_iter"], fab["n_restarts"], fab["n_target_classes"]) == (True, 100, 1, 9)
    assert (square["n_queries"], square["n_restarts"], square["p_init"]) == (5000, 1, 0.8)
    assert all(c["eps"] == pytest.approx(EPS) and c["seed"] == 0 for c in (apgd, apgd_t, fab, square))
    s = adapter.settings
    assert (s["version"], s["norm"], s["attacks"], s["batch_size"]) == (
        "standard", "Linf", ["apgd-ce", "apgd-t", "fab-t", "square"], 64)
    assert (s["apgd-ce"]["n_iter"], s["apgd-t"]["n_target_classes"], s["fab-t"]["n_target_classes"],
            s["square"]["n_queries"]) == (100, 9, 9, 5000)


class ToyLinear(nn.Module):
    """logits = W x: the label 0 can only be overturned through x0 (down) and x1 or x3 (up)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.diag(torch.tensor([1.0, 1.0, 0.2, 5.0])))

    def forward(self, x):
        return self.lin(x.flatten(1))


def test_mm3_is_targeted_apgd_on_the_margin():
    model = ToyLinear()
    x, y = torch.tensor([[0.9, 0.5, 0.45, 0.0]]).view(1, 1, 2, 2), torch.tensor([0])
    # Best reachable margins z_t - z_0 at ε = 0.1: t=1: 0.6 - 0.8, t=3: 0.5 - 0.8, t=2: 0.11 - 0.8 -> none flips.
    assert MM3(0.1)(model, x, y).flatten().sub(x.flatten()).abs().max() == 0  # robust points come back as they were
    assert model(MM3(0.3)(model, x, y)).argmax(1).item() != 0  # at ε = 0.3 targets 1 and 3 both flip it
    from part.attacks.autoattack_adapter import _margin_apgd_class

    apgd = _margin_apgd_class()(model, eps=0.1, device="cpu")
    apgd.y_target = torch.tensor([3, 1])
    logits = torch.tensor([[3.0, 1.0, 0.0, 2.0], [0.0, 60.0, 0.0, 0.0]])
    assert torch.equal(apgd.dlr_loss_targeted(logits, torch.tensor([0, 0])), torch.tensor([-51.0, -0.0]))


def test_same_seed_same_numbers(run_copy):
    first = evaluate(run_copy, ["pgd20", "mma", "mm3"], n_examples=N, seed=5, merge=False, log=None)
    arrays = {name: load_correct(run_copy, name)[0] for name in first["attacks"]}
    second = evaluate(run_copy, ["pgd20", "mma", "mm3"], n_examples=N, seed=5, merge=False, log=None)
    for name, entry in second["attacks"].items():
        assert entry["accuracy"] == first["attacks"][name]["accuracy"]
        assert np.array_equal(load_correct(run_copy, name)[0], arrays[name])
    assert not (run_copy / "metrics.json").exists()


def test_one_job_per_attack_then_merge(run_copy):
    evaluate(run_copy, ["natural"], n_examples=N, merge=False, log=None)
    evaluate(run_copy, ["pgd20"], n_examples=N, merge=False, log=None)
    merged = merge_metrics(run_copy)
    assert list(merged["attacks"]) == ["natural", "pgd20"]
    nat, pgd = load_correct(run_copy, "natural")[0], load_correct(run_copy, "pgd20")[0]
    assert merged["worst_case"]["n_correct"] == int((nat & pgd).sum())
    # Re-running one attack replaces its own entry and keeps the other job's.
    again = evaluate(run_copy, ["natural"], n_examples=N, log=None)
    assert list(again["attacks"]) == ["natural", "pgd20"]
    assert json.loads((run_copy / "metrics.json").read_text())["attacks"]["pgd20"] == merged["attacks"]["pgd20"]
    # An attack run on fewer examples (AutoAttack often is) joins the worst case on those only.
    evaluate(run_copy, ["pgd20"], n_examples=N // 2, merge=False, log=None)
    merged = merge_metrics(run_copy)
    assert [e["n_examples"] for e in merged["attacks"].values()] == [N, N // 2]
    pgd = load_correct(run_copy, "pgd20")[0]
    assert merged["worst_case"]["n_examples"] == N // 2
    assert merged["worst_case"]["n_correct"] == int((nat[:N // 2] & pgd).sum())
    # Results of another checkpoint are refused, not mixed.
    state = load_torch(run_copy / "model.pt")
    torch.save({k: v + 1 if v.is_floating_point() else v for k, v in state.items()}, run_copy / "model.pt")
    with pytest.raises(ValueError, match="another model.pt"):
        merge_metrics(run_copy)


def test_sanity_warnings(model_and_data, digits_dir):
    model, x, y = model_and_data
    natural = attack_specs(EPS, ALPHA)["natural"]
    model.train()
    with pytest.warns(EvaluationWarning, match="train mode"):
        run_attack(model, x, y, "natural", natural, log=None)
    assert model.training
    model.eval()
    with pytest.warns(EvaluationWarning, match="probabilities"):
        run_attack(nn.Sequential(model, nn.Softmax(dim=1)).eval(), x, y, "natural", natural, log=None)
    constant = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    nn.init.zeros_(constant[1].weight)
    nn.init.zeros_(constant[1].bias)
    test = load_prepared(digits_dir / "digits.pt").test
    with pytest.warns(EvaluationWarning, match="chance level"):
        run_attack(constant, test.images.float() / 255, test.labels, "natural", natural, log=None)
    with pytest.warns(EvaluationWarning, match="above natural"):
        check_accuracies("pgd20", torch.tensor([True, True, False, False] * 5), torch.tensor([True] * 20), 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_accuracies("pgd20", torch.tensor([True] * 20), torch.tensor([True, False] * 10), 10)


def test_cli_evaluate(run_copy, capsys):
    main(["evaluate", "--run", str(run_copy), "--attacks", "natural,pgd20", "--n-examples", "20", "--no-merge"])
    assert not (run_copy / "metrics.json").exists()
    main(["evaluate", "--run", str(run_copy), "--merge-only"])
    out = capsys.readouterr().out
    assert "pgd20: robust accuracy" in out and "-> metrics.json" in out
    assert json.loads((run_copy / "metrics.json").read_text())["worst_case"]["n_examples"] == 20
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--run", str(run_copy), "--attacks", "natural,cw"])
    assert exit_info.value.code == 2
