"""The release's behaviours, each against an explicit computation: TRADES' three forwards, the
DataParallel batch norm, PIL's bicubic resize, torchcam's CAM scaling, Pixel-AG's and MMA's random
starts, and the ``release`` preset."""

from __future__ import annotations

import contextlib
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from part.attacks.pgd import MMA, PGD, project
from part.base import config
from part.data.prepared import SHAPES, DeviceLoader, load_prepared
from part.models import build_model
from part.training import epsmap
from part.training.batchnorm import SlicedBatchNorm2d, slice_batchnorm
from part.training.cam import unit_scale, upsample_unit
from part.training.importance import importance_mask
from part.training.methods import outer_loss, trades_loss, training_attack
from part.training.resize import pil_bicubic_resize
from part.training.train import train


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))


def _expected_running_stats(net: nn.Module, inputs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Running mean and (unbiased) variance after train-mode forwards of ``inputs``, by hand."""
    bn = net[1]
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    m = bn.momentum
    with torch.no_grad():
        for x in inputs:
            a = net[0](x)
            mean = (1 - m) * mean + m * a.mean(dim=(0, 2, 3))
            var = (1 - m) * var + m * a.var(dim=(0, 2, 3), correction=1)
    return mean, var


@pytest.mark.parametrize("forwards, order", [(3, "x x' x"), (2, "x x'")])
def test_trades_batchnorm_statistics_move_once_per_forward(forwards, order):
    net = _bn_net().train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(16, 1, 8, 8, generator=g)
    x_adv = (x + 0.1 * torch.rand(x.shape, generator=g)).clamp(0, 1)
    expected = _expected_running_stats(net, [{"x": x, "x'": x_adv}[name] for name in order.split()])
    trades_loss(net, x, x_adv, torch.arange(16) % 10, 6.0, forwards=forwards)
    bn = net[1]
    assert int(bn.num_batches_tracked) == forwards
    torch.testing.assert_close(bn.running_mean, expected[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(bn.running_var, expected[1], rtol=0, atol=1e-6)


def test_trades_three_forwards_keep_loss_and_gradients():
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    x_adv, y = (x + 0.05).clamp(0, 1), torch.arange(16) % 10
    results = []
    for forwards in (2, 3):
        net = _bn_net().double().train()
        loss, logits_adv = trades_loss(net, x.double(), x_adv.double(), y, 6.0, forwards=forwards)
        loss.backward()
        results.append((loss.detach(), logits_adv.detach(), [p.grad for p in net.parameters()]))
    (l2, z2, g2), (l3, z3, g3) = results
    torch.testing.assert_close(l3, l2, rtol=0, atol=0)
    torch.testing.assert_close(z3, z2, rtol=0, atol=0)
    for a, b in zip(g2, g3):  # the losses cast logits to float32: the two paths round differently
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-9)


def test_trades_runs_use_the_configured_forwards():
    assert config.from_dict({"dataset": "cifar10"}).trades_forwards == 3  # the reference code's
    cfg = config.from_dict({"dataset": "cifar10", "method": "part_trades", "trades_forwards": 2})
    assert outer_loss(cfg).keywords == {"forwards": 2}
    with pytest.raises(config.ConfigError, match="trades_forwards"):
        config.from_dict({"dataset": "cifar10", "trades_forwards": 4})


@pytest.mark.parametrize("batch", [128, 80, 10, 3])
def test_sliced_batchnorm_is_dataparallel_on_one_device(batch):
    """Train mode: each torch.chunk slice normalised alone; running statistics from the first slice only."""
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(5)
    nn.init.normal_(plain.weight)
    nn.init.normal_(plain.bias)
    sliced = SlicedBatchNorm2d(5, slices=4)
    sliced.load_state_dict(plain.state_dict())
    x = torch.randn(batch, 5, 4, 4) * 3 + 1
    out = sliced(x)
    chunks = x.chunk(4)
    by_hand = torch.cat([
        (c - c.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(c.var(dim=(0, 2, 3), correction=0, keepdim=True)
                                                               + plain.eps)
        * plain.weight[None, :, None, None] + plain.bias[None, :, None, None] for c in chunks])
    torch.testing.assert_close(out, by_hand, rtol=1e-5, atol=1e-5)
    first = chunks[0]
    torch.testing.assert_close(sliced.running_mean, 0.9 * torch.zeros(5) + 0.1 * first.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(sliced.running_var, 0.9 * torch.ones(5) + 0.1 * first.var(dim=(0, 2, 3)))
    assert int(sliced.num_batches_tracked) == 1
    sliced.eval(), plain.eval()
    plain.load_state_dict(sliced.state_dict())
    assert torch.equal(sliced(x), plain(x))


def test_slice_batchnorm_on_a_resnet_equals_a_forward_per_slice():
    torch.manual_seed(0)
    reference = build_model("resnet18", 10, 3).train()
    model = slice_batchnorm(copy.deepcopy(reference), 4)
    assert sum(isinstance(m, SlicedBatchNorm2d) for m in model.modules()) == 20
    assert model.state_dict().keys() == reference.state_dict().keys()
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(x)
        per_slice = [copy.deepcopy(reference)(c) for c in x.chunk(4)[1:]]  # replicas whose statistics are discarded
        first = reference(x.chunk(4)[0])
    torch.testing.assert_close(out, torch.cat([first, *per_slice]), rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def _cam_sizes() -> set[tuple[int, int, int, int]]:
    """Every (h, w, H, W): CAM size of each model on each dataset's input, shapes only (meta tensors)."""
    sizes = set()
    for arch in ("small_cnn", "resnet18", "preact_resnet18", "wrn34_10"):
        for channels, height, width, classes in SHAPES.values():
            with torch.device("meta"):
                model = build_model(arch, classes, channels).eval()
                seen = []
                handle = model.cam_layer.register_forward_hook(lambda m, i, o: seen.append(o.shape[-2:]))
                model(torch.empty(1, channels, height, width))
                handle.remove()
            sizes.add((*seen[0], height, width))
    return sizes


CAM_SIZES = sorted(_cam_sizes())


def test_cam_sizes_cover_the_paper_models():
    assert {(4, 4, 32, 32), (8, 8, 32, 32), (8, 8, 64, 64), (16, 16, 64, 64), (4, 4, 8, 8)} <= set(CAM_SIZES)


@pytest.mark.parametrize("h, w, out_h, out_w", CAM_SIZES + [(3, 5, 7, 2), (4, 4, 4, 4)])
def test_pil_bicubic_resize_matches_pillow(h, w, out_h, out_w):
    maps = torch.rand(6, h, w, generator=torch.Generator().manual_seed(h * 100 + out_h))
    maps[0] = 0.0
    maps[1, 0, 0] = 1.0
    ours = pil_bicubic_resize(maps, (out_h, out_w))
    pillow = np.stack([np.asarray(Image.fromarray(m.numpy(), mode="F").resize((out_w, out_h), Image.BICUBIC))
                       for m in maps])
    assert ours.dtype == torch.float32 and ours.shape == (6, out_h, out_w)
    np.testing.assert_allclose(ours.numpy(), pillow, rtol=0, atol=1e-6)


def test_pil_resize_overshoots_and_is_not_clamped():
    cam = torch.zeros(1, 4, 4)
    cam[0, :, 2:] = 1.0  # a step edge: the cubic kernel rings on both sides of it
    pil = upsample_unit(cam, (32, 32), mode="pil_bicubic")
    assert pil.min() < 0 and pil.max() > 1  # a = -0.5 rings; the release standardises it as it is
    torch_bicubic = upsample_unit(cam, (32, 32), mode="bicubic")
    assert torch_bicubic.min() >= 0 and torch_bicubic.max() <= 1


def test_release_start_is_scalar_and_unclipped_then_projected(tiny_net):
    """x + U(-ε, ε) with the scalar ε, gradient taken there, ε-map and box enforced by the first projection."""
    g = torch.Generator().manual_seed(4)
    x = torch.rand(8, 1, 8, 8, generator=g)
    x[:, :, :2] = 0.0  # some entries at the box's edge: an unclipped start leaves the box there
    eps = 0.1
    eps_map = torch.where(torch.rand(8, 1, 8, 8, generator=g) > 0.7, eps, 0.02)
    y = torch.arange(8) % 10
    attack = PGD(eps, alpha=0.03, steps=1, map_start="scalar_unclipped")
    x_adv = attack(tiny_net, x, y, eps=eps_map, generator=torch.Generator().manual_seed(5))

    start = x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1) * eps
    assert (start < 0).float().mean() > 0.05 and ((start - x).abs() > eps_map).float().mean() > 0.2
    start.requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(tiny_net(start), y, reduction="sum"), start)
    expected = project(project(start.detach() + 0.03 * grad.sign(), x, eps_map), x, eps_map)
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=0)
    assert ((x_adv - x).abs() <= eps_map + 1e-7).all() and x_adv.min() >= 0 and x_adv.max() <= 1

    default = PGD(eps, alpha=0.03, steps=1)(tiny_net, x, y, eps=eps_map, generator=torch.Generator().manual_seed(5))
    assert not torch.equal(default, x_adv)  # the per-pixel, clipped start is another start
    scalar = [PGD(eps, 0.03, 1, map_start=s)(tiny_net, x, y, generator=torch.Generator().manual_seed(5))
              for s in ("per_pixel", "scalar_unclipped")]
    assert torch.equal(*scalar)  # a scalar budget (warm-up, PGD-20) always starts clipped


SCALES = [2.0 ** -10, 2.0 ** -20, 2.0 ** -30]  # ≈ 1e-3 (a barely trained model), 1e-6, 1e-9


@pytest.mark.parametrize("scale", SCALES)
def test_cam_normalise_on_maps_of_tiny_magnitude(scale):
    """torchcam's (m − min) / max is exact at any magnitude; grad-cam's / (max + 1e-7) is not."""
    cam = torch.tensor([[[1.0, 2.0], [3.0, 5.0]], [[7.0, 7.0], [7.0, 7.0]]]) * scale  # powers of two: exact
    exact = torch.tensor([[0.0, 0.25], [0.5, 1.0]])
    released = unit_scale(cam, "max")
    assert torch.equal(released[0], exact)
    assert torch.equal(released[1], torch.zeros(2, 2))  # a constant map: zeros (torchcam: 0/0 = NaN)
    grad_cam = unit_scale(cam, "max_eps")
    by_hand = torch.tensor([[0.0, 1.0], [2.0, 4.0]], dtype=torch.float64) * scale / (4 * scale + 1e-7)
    torch.testing.assert_close(grad_cam[0].double(), by_hand, rtol=2e-7, atol=0)
    assert grad_cam[0].max() < 1 - 2.5e-5 and torch.equal(grad_cam[1], torch.zeros(2, 2))
    # the resize works on the scaled map: the release's PIL bicubic of the exact unit map
    resized = upsample_unit(cam, (5, 7), mode="pil_bicubic", normalise="max")
    assert torch.equal(resized, pil_bicubic_resize(torch.stack([exact, torch.zeros(2, 2)]), (5, 7)))
    nearest = upsample_unit(cam, (4, 4), mode="nearest", normalise="max")
    assert torch.equal(nearest[0, ::2, ::2], exact)


def test_cam_normalise_flips_a_jet_eps_map_entry_at_1e_3():
    """The issue's finding, on one map: at CAM values ≈ 1e-3 grad-cam's scaling moves squared unit values
    off jet's bin edges (k / 256) and one entry of the release's ε-map flips; torchcam's scaling keeps it."""
    levels = torch.tensor([[[16.0, 0, 16, 11], [0, 10, 15, 5], [9, 2, 7, 8], [11, 14, 0, 5]]])
    release_mask = importance_mask(levels / 16, "official_jet")  # the unit map torchcam gives, exactly
    for scale in SCALES:
        assert torch.equal(importance_mask(unit_scale(levels * scale, "max"), "official_jet"), release_mask)
    flipped = importance_mask(unit_scale(levels * 2.0 ** -10, "max_eps"), "official_jet") != release_mask
    assert flipped.nonzero().tolist() == [[0, 1, 2, 0]]


def test_refresh_scales_cams_as_configured(digits_dir, monkeypatch):
    seen = []
    real = epsmap.unit_maps
    monkeypatch.setattr(epsmap, "unit_maps", lambda *a, **kw: seen.append(kw["normalise"]) or real(*a, **kw))
    train_split = load_prepared(digits_dir / "digits.pt").train
    loader = DeviceLoader(train_split, 256, "cpu", shuffle=False)
    for preset, normalise in (("default", "max_eps"), ("release", "max")):
        cfg = config.from_dict({"dataset": "digits", "device": "cpu", "preset": preset, "mask": {"pairing": "own"}})
        assert cfg.cam.normalise == normalise
        epsmap.EpsMapStore(cfg).refresh(build_model("small_cnn", 10, 1), loader, 0, contextlib.nullcontext)
        assert set(seen) == {normalise}
        seen.clear()


def _mma_case():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(8, 1, 8, 8, generator=g)
    x[:, :, :2] = 0.0  # entries at the box's edge: the scalar draw leaves the box there before clipping
    eps_map = torch.where(torch.rand(8, 1, 8, 8, generator=g) > 0.7, 0.1, 0.02)
    return x, torch.arange(8) % 10, eps_map


def _mma_run(pixel_start: str, steps: int, preset: str = "default") -> MMA:
    cfg = config.from_dict({"dataset": "cifar10", "preset": preset, "attack": {
        "eps": 0.1, "eps_low": 0.02, "alpha": 0.03, "steps": steps, "generator": "mma", "pixel_start": pixel_start}})
    attack = training_attack("at", cfg.attack)
    assert isinstance(attack, MMA)
    return attack


@pytest.mark.parametrize("pixel_start, start_budget", [("per_pixel", "map"), ("scalar_unclipped", "scalar")])
def test_mma_generator_start_by_hand(tiny_net, pixel_start, start_budget):
    """MMA as PART's generator, one step: the start (per-pixel, or the release's scalar one, both clipped),
    a targeted-margin sign step for each of the k = 3 wrong classes, the ε-map projection, the best margin."""
    x, y, eps_map = _mma_case()
    x_adv = _mma_run(pixel_start, steps=1)(tiny_net, x, y, eps=eps_map, generator=torch.Generator().manual_seed(5))

    noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(5)) * 2 - 1
    start = (x + noise * (0.1 if start_budget == "scalar" else eps_map)).clamp(0, 1)
    outside = (start - x).abs() > eps_map + 1e-7
    assert outside.any() == (start_budget == "scalar")  # the scalar start leaves the ε-map's ball...
    assert start.min() >= 0 and start.max() <= 1  # ...but not the box
    with torch.no_grad():
        targets = tiny_net(x).scatter(1, y[:, None], float("-inf")).topk(3, dim=1).indices
    candidates, margins = [], []
    for t in targets.T:
        s = start.clone().requires_grad_(True)
        z = tiny_net(s)
        m = z.gather(1, t[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1)
        (grad,) = torch.autograd.grad(-(50.0 - m).clamp(min=0).sum(), s)
        first = project(project(s.detach() + 0.03 * grad.sign(), x, eps_map), x, eps_map)
        candidates.append(first)
        with torch.no_grad():
            z = tiny_net(first)
        margins.append(z.gather(1, t[:, None]).squeeze(1) - z.gather(1, y[:, None]).squeeze(1))
    best = torch.stack(margins, 1).argmax(1)
    expected = torch.stack(candidates, 1)[torch.arange(8), best]
    torch.testing.assert_close(x_adv, expected, rtol=0, atol=0)


@pytest.mark.parametrize("pixel_start", ["per_pixel", "scalar_unclipped"])
def test_mma_generator_invariants(tiny_net, pixel_start):
    x, y, eps_map = _mma_case()
    start_alone = MMA(0.1, 0.03, steps=0, map_start={"per_pixel": "per_pixel", "scalar_unclipped": "scalar"}[pixel_start])
    for attack in (start_alone, _mma_run(pixel_start, 1), _mma_run(pixel_start, 5)):  # a run config needs steps ≥ 1
        x_adv = attack(tiny_net, x, y, eps=eps_map, generator=torch.Generator().manual_seed(5))
        assert ((x_adv - x).abs() <= eps_map + 1e-7).all() and x_adv.min() >= 0 and x_adv.max() <= 1


def test_mma_generator_start_switch_and_preset(tiny_net):
    x, y, eps_map = _mma_case()
    runs = {s: _mma_run(s, 1)(tiny_net, x, y, eps=eps_map, generator=torch.Generator().manual_seed(5))
            for s in ("per_pixel", "scalar_unclipped")}
    assert not torch.equal(runs["per_pixel"], runs["scalar_unclipped"])
    assert _mma_run("scalar_unclipped", 1, preset="release").map_start == "scalar"
    release = config.from_dict({"dataset": "cifar10", "preset": "release", "attack": {"generator": "mma"}})
    assert training_attack("at", release.attack).map_start == "scalar"
    scalar = [MMA(0.1, 0.03, 1, map_start=s)(tiny_net, x, y, generator=torch.Generator().manual_seed(5))
              for s in ("per_pixel", "scalar")]
    assert torch.equal(*scalar)  # a scalar budget (warm-up, evaluation) gets the same start either way
    with pytest.raises(ValueError, match="map_start"):
        MMA(0.1, 0.03, map_start="scalar_unclipped")


def test_release_preset_turns_on_every_switch_and_yields_to_explicit_keys():
    paper = config.from_dict({"dataset": "cifar10"})
    release = config.from_dict({"dataset": "cifar10", "preset": "release"})
    assert not any(v for k, v in config.release_behaviours(paper).items()
                   if k not in ("trades_forwards", "optim.lr_milestones"))
    assert all(config.release_behaviours(release).values())
    assert (release.mask.pairing, release.mask.recipe, release.cam.resize, release.cam.normalise,
            release.attack.pixel_start, release.batchnorm.slices) == ("batch_index", "official_jet", "pil_bicubic",
                                                                     "max", "scalar_unclipped", 4)
    assert paper.cam.normalise == "max_eps"
    one_off = config.from_dict({"dataset": "cifar10", "preset": "release", "mask": {"recipe": "default"}})
    assert one_off.mask.recipe == "default" and one_off.mask.pairing == "batch_index"
    assert not config.release_behaviours(config.from_dict({"dataset": "digits"}))["optim.lr_milestones"]


def test_release_run_records_its_behaviours(digits_dir, tmp_path):
    cfg = config.from_dict({"dataset": "digits", "data_dir": str(digits_dir), "device": "cpu", "epochs": 3,
                            "warmup_epochs": 1, "method": "part_trades", "preset": "release",
                            "mask": {"recipe": "default"}})
    info = train(cfg, tmp_path / "run", log=lambda _: None)
    recorded = json.loads((tmp_path / "run" / "run.json").read_text())
    assert recorded["config"]["preset"] == "release" and recorded["config"]["batchnorm"] == {"slices": 4}
    assert recorded["release_behaviours"] == info["release_behaviours"]
    assert recorded["release_behaviours"]["mask.pairing"] and not recorded["release_behaviours"]["mask.recipe"]
    assert np.isfinite(info["final"]["loss"]) and info["final"]["phase"] == "part"


@pytest.mark.parametrize("raw, key", [
    ({"cam": {"backend": "grad-cam", "resize": "pil_bicubic"}}, "cam.resize"),
    ({"batchnorm": {"slices": 256}}, "batchnorm.slices"),
    ({"attack": {"pixel_start": "ball"}}, "attack.pixel_start"),
    ({"cam": {"normalise": "minmax"}}, "cam.normalise"),
    ({"cam": {"backend": "grad-cam", "normalise": "max"}}, "cam.normalise"),
    ({"preset": "paper"}, "preset"),
])
def test_bad_release_settings_name_their_key(raw, key):
    with pytest.raises(config.ConfigError, match=key.replace(".", r"\.")):
        config.from_dict({"dataset": "cifar10", **raw})
