"""The eager training optimiser: torch's SGD bit for bit, and a training process that compiles nothing never
imports torch._dynamo (about 1 CPU-s of every training job)."""

import json
import subprocess
import sys

import torch
from torch import nn

from part.training.optim import EagerSGD, sgd

SETTINGS = {"lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4}


def descend(optimizer_class, steps=4):
    """A few SGD steps of a seeded conv net, a state-dict round trip halfway: the weights and the state dict."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    optimizer = optimizer_class(model.parameters(), **SETTINGS)
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(torch.randn(8, 1, 8, 8)), torch.randint(0, 10, (8,))).backward()
        optimizer.step()
        if step == steps // 2:
            saved = optimizer.state_dict()
            optimizer = optimizer_class(model.parameters(), **SETTINGS)
            optimizer.load_state_dict(saved)
    return [p.detach().clone() for p in model.parameters()], optimizer.state_dict()


def test_eager_sgd_updates_and_saves_exactly_as_torch_sgd():
    (eager, eager_state), (torch_sgd, torch_state) = descend(EagerSGD), descend(torch.optim.SGD)
    assert all(torch.equal(a, b) for a, b in zip(eager, torch_sgd, strict=True))
    assert eager_state["param_groups"] == torch_state["param_groups"]
    assert eager_state["state"].keys() == torch_state["state"].keys() and all(
        torch.equal(eager_state["state"][k]["momentum_buffer"], torch_state["state"][k]["momentum_buffer"])
        for k in eager_state["state"])


def test_a_compiled_model_keeps_torchs_own_sgd():
    params = [nn.Parameter(torch.zeros(2))]
    assert type(sgd(params, compiled=True, lr=0.1)) is torch.optim.SGD
    assert type(sgd(params, compiled=False, lr=0.1)) is EagerSGD


def test_a_training_run_that_compiles_nothing_never_imports_dynamo(digits_dir, tmp_path):
    """`part train` end to end in a fresh interpreter (validation, best and EMA weights, checkpoints), then
    the modules it loaded."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"dataset: digits\ndata_dir: {digits_dir}\ndevice: cpu\nmethod: part\nepochs: 2\nwarmup_epochs: 1\n"
                   "attack: {steps: 2}\nvalidation: {size: 100, every: 1, steps: 2}\nema: {decay: 0.9}\n")
    probe = ("import json, sys; from part.cli import main; "
             f"main(['train', '--config', {str(cfg)!r}, '--out', {str(tmp_path / 'run')!r}]); "
             "print(json.dumps(sorted(m for m in sys.modules if m.startswith('torch._dynamo'))))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "ema.pt").exists() and (tmp_path / "run" / "best.pt").exists()
    assert json.loads(proc.stdout.splitlines()[-1]) == []
