"""The CPU twins of the GPU paths: ``compile: default`` (inductor generates C++ for the CPU), ``channels_last``
and ``precision: bf16`` each train a tiny PART run (2 epochs: 1 warm-up + 1 PART with its ε-map refresh) and
end within a stated tolerance of the same run trained eagerly in fp32; and the batch loop reads nothing
back to the host. These are the code paths the first GPU run takes.

The tolerances are not float rounding alone: every PGD step takes the sign of the input gradient, so a
rounding difference that flips one near-zero component moves that pixel by 2α, and a run of a few steps
amplifies it. Measured on this tiny run (8 steps), relative L2 distance of the final weights from the
eager fp32 run's: compiled 0.11 %, channels_last 0.21 %, bf16 0.98 %; epoch losses within 7e-4. The
bounds below leave 5-10 times that, for other CPUs' kernels. The single forward/backward of
:func:`test_compiled_forward_and_gradients_equal_eager` has no attack in between and is held to float
tolerance.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from part.base import config
from part.data.prepared import PreparedDataset, Split, prepare_digits, save_prepared
from part.training.train import build_engine, run_epoch

TRAIN_IMAGES, BATCH = 200, 64  # three full batches and a last one of 8 images
WEIGHTS_TOLERANCE = {"compile": 0.01, "channels_last": 0.02, "bf16": 0.05}
"""Largest relative L2 distance of the final weights (and batch-norm statistics) from the eager fp32 run's."""
LOSS_TOLERANCE = {"compile": 0.005, "channels_last": 0.005, "bf16": 0.01}
"""Largest relative difference of each epoch's mean training loss from the eager fp32 run's."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(data dir, training split): the first 200 training and 50 test images of the digits."""
    digits = prepare_digits()
    small = PreparedDataset("digits", Split(digits.train.images[:TRAIN_IMAGES], digits.train.labels[:TRAIN_IMAGES]),
                            Split(digits.test.images[:50], digits.test.labels[:50]), 10, digits.meta)
    root = tmp_path_factory.mktemp("tiny")
    save_prepared(root / "digits.pt", small)
    return root, small.train


def tiny_config(root, **overrides) -> config.RunConfig:
    raw = {"dataset": "digits", "data_dir": str(root), "device": "cpu", "method": "part", "epochs": 2,
           "warmup_epochs": 1, "batch_size": BATCH, "mask": {"refresh_every": 1}}
    return config.from_dict(config.deep_merge(raw, overrides))


def train_tiny(root, split, after_epoch=lambda epoch: None, **overrides):
    """(engine, epoch records) of a tiny run trained by the engine ``part.training.train.train`` uses."""
    engine = build_engine(tiny_config(root, **overrides), split, 10, torch.device("cpu"))
    records = []
    for epoch in range(engine.cfg.epochs):
        records.append(run_epoch(engine, epoch))
        after_epoch(epoch)
    return engine, records


def relative_distance(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    keys = [k for k in a if a[k].is_floating_point()]
    num = sum(float((a[k].float() - b[k].float()).square().sum()) for k in keys)
    den = sum(float(a[k].float().square().sum()) for k in keys)
    return (num / den) ** 0.5


def assert_close_to_eager(eager, engine, records, what: str) -> None:
    eager_engine, eager_records = eager
    state = engine.model.state_dict()
    assert all(v.dtype == eager_engine.model.state_dict()[k].dtype for k, v in state.items())  # fp32 master weights
    distance = relative_distance(eager_engine.model.state_dict(), state)
    assert distance <= WEIGHTS_TOLERANCE[what], f"{what}: weights {distance:.4f} from the eager run's"
    for mine, theirs in zip(records, eager_records, strict=True):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=LOSS_TOLERANCE[what]), f"{what}: epoch {mine['epoch']}"
        assert mine["phase"] == theirs["phase"] and mine["refreshed"] == theirs["refreshed"]
        assert mine["full_eps_share"] == pytest.approx(theirs["full_eps_share"], abs=0.05)


@pytest.fixture(scope="module")
def eager(tiny):
    return train_tiny(*tiny)


NO_COMPILER = shutil.which(os.environ.get("CXX", "g++")) is None
needs_compiler = pytest.mark.skipif(NO_COMPILER, reason="inductor compiles C++ for the CPU and no compiler ($CXX or "
                                    "g++) is on PATH; .ci/run installs g++")


@needs_compiler
def test_compile_default_trains_like_eager_and_recompiles_only_in_its_first_epoch(tiny, eager):
    """``compile: default`` (inductor, C++ on the CPU): within tolerance of eager, and the compiled forward
    compiles 4 graphs (3 recompilations), all in epoch 1, none after:

    1. the first batch's attack: eval mode, input requiring grad (PGD differentiates w.r.t. x'), 64 images;
    2. its outer loss: train mode, input not requiring grad (x' is detached) — the requires_grad variant;
    3. the last, partial batch's attack (8 images): automatic dynamic shapes recompile with a symbolic batch;
    4. its outer loss, likewise.
    Epoch 2 (PART, with its ε-map refresh by the eager model) hits these four graphs only: the ε-map
    enters the attack's projection, not the compiled forward.
    """
    from torch._dynamo.utils import counters, guard_failures

    torch._dynamo.reset()  # clears the compiled code and the guard failures of earlier tests
    counters.clear()
    frames = []  # frames (graphs) compiled by the end of each epoch
    engine, records = train_tiny(*tiny, after_epoch=lambda epoch: frames.append(counters["frames"]["total"]),
                                 compile="default")
    failures = [reason for reasons in guard_failures.values() for reason in reasons]
    recompilations = [frames[0] - 1, frames[1] - frames[0]]  # per epoch, the first compilation not counted
    assert recompilations == [3, 0] and counters["stats"]["unique_graphs"] == 4, (frames, failures)
    assert any("requires_grad mismatch" in reason for reason in failures), failures  # graph 2
    assert any("size mismatch at index 0. expected 64, actual 8" in reason for reason in failures), failures  # 3, 4
    assert_close_to_eager(eager, engine, records, "compile")


@needs_compiler
def test_compiled_forward_and_gradients_equal_eager(tiny):
    """One train-mode forward and backward of the same weights and batch: float tolerance, no attack between
    (inductor sums in another order than the eager kernels)."""
    root, split = tiny
    cfg = tiny_config(root)
    x = split.images[:BATCH].float().div(255)
    y = split.labels[:BATCH]

    def loss_and_grads(compile_it: bool):
        model = build_engine(cfg, split, 10, torch.device("cpu")).model  # the seed's initial weights
        loss = torch.nn.functional.cross_entropy((torch.compile(model) if compile_it else model)(x), y)
        loss.backward()
        return loss.detach(), [p.grad for p in model.parameters()]

    (loss_eager, grads_eager), (loss_compiled, grads_compiled) = loss_and_grads(False), loss_and_grads(True)
    torch.testing.assert_close(loss_compiled, loss_eager, rtol=1e-5, atol=1e-6)
    distances = [float((c - e).norm() / e.norm()) for c, e in zip(grads_compiled, grads_eager, strict=True)]
    # ≈ 3e-6 for most tensors; ≈ 1e-3 for the first conv's weights and batch-norm shift, whose gradients are
    # sums over the batch that nearly cancel (batch norm subtracts the mean), so summation order shows
    assert max(distances) < 1e-2 and sorted(distances)[len(distances) // 2] < 1e-4, distances


def test_channels_last_trains_like_eager(tiny, eager):
    engine, records = train_tiny(*tiny, channels_last=True)
    conv = engine.model.features[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and conv.dim() == 4 and conv.shape[1] == 1
    assert next(engine.loader.epoch(torch.Generator().manual_seed(0))).x.is_contiguous(
        memory_format=torch.channels_last)
    assert_close_to_eager(eager, engine, records, "channels_last")


def test_bf16_autocast_trains_like_fp32(tiny, eager):
    """precision: bf16 on the CPU: the model runs in bf16 under the run's autocast, the weights stay fp32."""
    engine, records = train_tiny(*tiny, precision="bf16")
    x = next(engine.loader.epoch(torch.Generator().manual_seed(0))).x
    with torch.no_grad(), engine.autocast():
        assert engine.forward(x).dtype == torch.bfloat16
    assert_close_to_eager(eager, engine, records, "bf16")


class HostReads(TorchDispatchMode):
    """Counts the operations that read a device tensor back to the host (a synchronisation on CUDA)."""

    SYNCING = {"aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::unique_dim",
               "aten::_unique2", "aten::equal"}

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func._schema.name in self.SYNCING:
            self.reads.append(func._schema.name)
        return func(*args, **(kwargs or {}))


class CountingLoader:
    """The run's loader, counting host reads while its training batches are consumed: the batch loop."""

    def __init__(self, loader):
        self.loader, self.reads = loader, []

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def epoch(self, generator=None, *, plain=False):
        if plain:
            yield from self.loader.epoch(generator, plain=True)
            return
        mode = HostReads()
        with mode:
            yield from self.loader.epoch(generator)
        self.reads.append(mode.reads)


@pytest.mark.parametrize("method", ["part", "part_trades", "part_mart"])
def test_the_batch_loop_reads_nothing_back_to_the_host(tiny, method):
    """With EMA on, every step of AT / TRADES / MART and their PART epochs stays on the device: the losses,
    accuracies and budget shares are read once, after the loop (torch's AveragedModel read its step count
    twice per batch)."""
    root, split = tiny
    engine = build_engine(tiny_config(root, method=method, ema={"decay": 0.9}, attack={"steps": 2}), split, 10,
                          torch.device("cpu"))
    counting = CountingLoader(engine.loader)
    engine = dataclasses.replace(engine, loader=counting)
    for epoch in range(2):
        run_epoch(engine, epoch)
    assert counting.reads == [[], []]
