"""Model zoo: shapes at every supported input size, CAM targets, reference parameter counts,
seeded reproducibility and input gradients (the attacks differentiate w.r.t. the image)."""

import pytest
import torch
from torch import nn

from part.base.vocabulary import MODELS
from part.models import build_model

CHEAP = [m for m in MODELS if m != "wrn34_10"]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_with_cam(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    captured = []
    handle = model.cam_layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        logits = model(x)
    finally:
        handle.remove()
    assert len(captured) == 1, "cam_layer must run exactly once per forward"
    return logits, captured[0]


@pytest.mark.parametrize("name", CHEAP)
@pytest.mark.parametrize("in_channels,size", [(1, 8), (1, 28), (3, 32), (3, 64)])
def test_output_and_cam_shapes(name, in_channels, size):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, in_channels=in_channels).eval()
    x = torch.rand(2, in_channels, size, size)
    with torch.no_grad():
        logits, cam = forward_with_cam(model, x)
    assert logits.shape == (2, 7)
    assert cam.dim() == 4 and cam.shape[0] == 2 and min(cam.shape[2:]) >= 1
    assert torch.isfinite(logits).all()


def test_wrn_shapes_and_input_gradient():
    # One forward/backward only: WRN-34-10 is slow on CPU.
    torch.manual_seed(0)
    model = build_model("wrn34_10", num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    logits, cam = forward_with_cam(model, x)
    assert logits.shape == (2, 10)
    assert cam.shape == (2, 640, 8, 8)
    (grad,) = torch.autograd.grad(logits[:, 0].sum(), x)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_train_mode_batch_of_two_runs():
    """Batch norm in training mode needs > 1 value per channel: on 8×8 inputs layer4's maps are 1×1, so with a
    batch of two its last batch norm normalises two values a channel — by the batch's own statistics, as
    the formula written out here does (biased variance, the layer's ε, weight and bias)."""
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, in_channels=1).train()
    bn, seen = model.layer4[-1].bn2, {}
    bn.register_forward_hook(lambda _m, inputs, output: seen.update(x=inputs[0], y=output))
    with torch.no_grad():
        nn.init.normal_(bn.weight)
        nn.init.normal_(bn.bias)
        out = model(torch.rand(2, 1, 8, 8))
    x = seen["x"]
    assert out.shape == (2, 10) and torch.isfinite(out).all() and x.shape == (2, 512, 1, 1)
    mean, var = x.mean(dim=(0, 2, 3), keepdim=True), x.var(dim=(0, 2, 3), correction=0, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight[:, None, None] + bn.bias[:, None, None]
    torch.testing.assert_close(seen["y"], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "name,expected",
    [("resnet18", 11_173_962), ("preact_resnet18", 11_172_170), ("wrn34_10", 46_160_474)],
)
def test_reference_parameter_counts(name, expected):
    assert n_params(build_model(name, num_classes=10)) == expected


def test_small_cnn_is_tiny():
    assert n_params(build_model("small_cnn", num_classes=10, in_channels=1)) < 150_000


def test_small_cnn_width_sets_its_channels_and_only_small_cnn_has_one():
    narrow = build_model("small_cnn", num_classes=10, in_channels=1, width=12)
    convs = [m for m in narrow.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [12, 24, 48] and narrow.fc.in_features == 48
    assert narrow(torch.rand(2, 1, 8, 8)).shape == (2, 10) and narrow.cam_layer(torch.rand(2, 24, 4, 4)).shape == (2, 48, 4, 4)
    assert [c.out_channels for c in build_model("small_cnn", 10, 1).modules() if isinstance(c, torch.nn.Conv2d)] == [32, 64, 128]
    with pytest.raises(ValueError, match="width 12 given for 'resnet18'; only small_cnn"):
        build_model("resnet18", 10, width=12)


def test_cam_layer_is_the_documented_stage():
    resnet = build_model("resnet18", 10)
    assert resnet.cam_layer is resnet.layer4
    preact = build_model("preact_resnet18", 10)
    assert preact.cam_layer is preact.layer4
    wrn = build_model("wrn34_10", 10)
    assert wrn.cam_layer is wrn.block3
    assert all(hasattr(wrn, attr) for attr in ("block1", "block2", "block3", "bn1", "relu", "fc"))


@pytest.mark.parametrize("name", MODELS)
def test_same_seed_same_weights(name):
    torch.manual_seed(123)
    a = build_model(name, num_classes=10, in_channels=3).state_dict()
    torch.manual_seed(123)
    b = build_model(name, num_classes=10, in_channels=3).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_different_seed_different_weights():
    torch.manual_seed(0)
    a = build_model("small_cnn", 10).state_dict()
    torch.manual_seed(1)
    b = build_model("small_cnn", 10).state_dict()
    assert not torch.equal(a["fc.weight"], b["fc.weight"])


def test_unknown_name_raises():
    with pytest.raises(ValueError, match="resnet1000") as err:
        build_model("resnet1000", num_classes=10)
    assert all(name in str(err.value) for name in MODELS)


@pytest.mark.parametrize("name", CHEAP)
def test_gradients_reach_the_input(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, in_channels=3).eval()
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1]))
    (grad,) = torch.autograd.grad(loss, x)
    assert grad.shape == x.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
