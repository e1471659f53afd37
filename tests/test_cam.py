"""Batched CAMs: grad-cam 1.5.7 as the oracle, batching invariance, and no side effects on the model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_grad_cam import GradCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from torch import nn

from part.training.cam import (TORCH_CAM_METHODS, package_cams, class_activation_maps, gradcam_package_maps, unit_maps,
                               upsample_unit)

PACKAGE_CLASSES = {"gradcam": GradCAM, "xgradcam": XGradCAM, "layercam": LayerCAM}


class CamNet(nn.Module):
    """3x16x16 -> 8x8 CAM layer -> 5 classes, with batch norm whose running stats matter."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
        for bn in (self.stem[1], self.block[1]):
            nn.init.uniform_(bn.running_mean, -0.2, 0.2)
            nn.init.uniform_(bn.running_var, 0.5, 2.0)
            nn.init.uniform_(bn.weight, 0.5, 1.5)
            nn.init.uniform_(bn.bias, -0.2, 0.2)

    @property
    def cam_layer(self) -> nn.Module:
        return self.block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


@pytest.fixture
def net() -> CamNet:
    torch.manual_seed(0)
    return CamNet().eval()


@pytest.fixture
def x() -> torch.Tensor:
    return torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def rescale(maps: torch.Tensor) -> torch.Tensor:
    """The package's last step (aggregate_multi_layers): scale_cam_image without resizing."""
    return torch.from_numpy(scale_cam_image(maps.numpy()))


def package_output(model: nn.Module, x: torch.Tensor, method: str) -> np.ndarray:
    with PACKAGE_CLASSES[method](model=model, target_layers=[model.cam_layer]) as cam:
        return cam(input_tensor=x, targets=None)


def assert_no_hooks(model: nn.Module) -> None:
    for module in model.modules():
        assert not module._forward_hooks and not module._backward_hooks


@pytest.mark.parametrize("normalise", ["max_eps", "max"])  # torchcam's max alone is harmless at these magnitudes
@pytest.mark.parametrize("method", TORCH_CAM_METHODS)
def test_matches_grad_cam_package(net, x, method, normalise):
    expected = torch.from_numpy(package_output(net, x, method))
    cam, _ = class_activation_maps(net, x, method)
    assert cam.shape == (6, 8, 8) and cam.dtype == torch.float32
    ours = rescale(upsample_unit(cam, x.shape[-2:], mode="bilinear", normalise=normalise))
    diff = (ours - expected).abs().max().item()
    print(f"{method}: max abs diff vs pytorch_grad_cam = {diff:.3g}")
    assert diff < 1e-4
    assert (cam.amax(dim=(1, 2)) > 0).all()  # non-degenerate maps, so the comparison means something


def test_package_backend_matches_package_and_torch_backend(net, x):
    package = gradcam_package_maps(net, x, "gradcam")
    assert package.shape == (6, 16, 16) and package.dtype == torch.float32 and package.device == x.device
    assert torch.equal(package, torch.from_numpy(package_output(net, x, "gradcam")))
    torch_maps = unit_maps(net, x, "gradcam", backend="torch", mode="bilinear")
    # The package min-max scales once more after resizing; the torch backend does not.
    assert (rescale(torch_maps) - package).abs().max() < 1e-4
    assert torch.equal(unit_maps(net, x, "gradcam", backend="grad-cam"), package)


def test_package_backend_leaves_model_untouched(net, x):
    net.train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    grads = [torch.full_like(p, 0.5) for p in net.parameters()]
    for p, g in zip(net.parameters(), grads):
        p.grad = g
    for method in ("gradcam++", "eigencam"):
        maps = gradcam_package_maps(net, x, method)
        assert maps.shape == (6, 16, 16) and torch.isfinite(maps).all()
    assert all(m.training for m in net.modules())
    assert all(p.grad is g for p, g in zip(net.parameters(), grads))
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())
    assert_no_hooks(net)


def test_predicted_class_targets(net, x):
    _, pred = class_activation_maps(net, x)
    assert torch.equal(pred, net(x).argmax(1))


@pytest.mark.parametrize("method", TORCH_CAM_METHODS)
def test_batch_equals_single_images(net, x, method):
    cam, pred = class_activation_maps(net, x, method)
    for i in range(len(x)):
        alone, pred_i = class_activation_maps(net, x[i : i + 1], method)
        assert pred_i.item() == pred[i].item()
        assert torch.allclose(alone[0], cam[i], rtol=0, atol=1e-5 * cam[i].abs().max().item())


def test_no_side_effects(net, x):
    net.train()
    net.stem[1].eval()  # mixed flags come back module by module
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = x.requires_grad_()
    maps = unit_maps(net, x, "layercam")
    assert maps.shape == (6, 16, 16) and not maps.requires_grad
    assert 0.0 <= maps.min() and maps.max() <= 1.0
    assert all(p.grad is None for p in net.parameters())
    assert x.grad is None
    assert [m.training for m in net.modules()] == [m is not net.stem[1] for m in net.modules()]
    assert all(torch.equal(v, state[k]) for k, v in net.state_dict().items())  # BN stats untouched
    assert_no_hooks(net)
    # The maps are eval-mode maps: batch statistics would give different ones.
    net.eval()
    assert torch.equal(unit_maps(net, x.detach(), "layercam"), maps)


def test_training_flag_restored_on_error(net):
    net.train()
    with pytest.raises(RuntimeError):
        class_activation_maps(net, torch.rand(2, 5, 16, 16))  # wrong channel count
    assert all(m.training for m in net.modules())
    assert_no_hooks(net)


def test_works_without_grad_and_with_frozen_parameters(net, x):
    expected, _ = class_activation_maps(net, x)
    for p in net.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        cam, _ = class_activation_maps(net, x)
    assert torch.allclose(cam, expected, rtol=1e-5, atol=1e-7)


def test_bf16_autocast_gives_float32_maps(net, x):
    with torch.autocast("cpu", dtype=torch.bfloat16):
        maps = unit_maps(net, x, "gradcam")
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
    reference = unit_maps(net, x, "gradcam")
    assert torch.corrcoef(torch.stack([maps.flatten(), reference.flatten()]))[0, 1] > 0.9


def test_inplace_modified_activation_is_refused(net, x):
    net.head = nn.Sequential(nn.ReLU(inplace=True), *net.head)
    with pytest.raises(RuntimeError, match="in place"):
        class_activation_maps(net, x)


def test_upsample_unit():
    cam = torch.tensor([[[0.0, 2.0], [4.0, 8.0]], [[3.0, 3.0], [3.0, 3.0]]])
    out = upsample_unit(cam, (5, 7))
    assert out.shape == (2, 5, 7)
    assert out.min() >= 0 and out.max() <= 1  # bicubic overshoot clamped
    assert torch.equal(out[1], torch.zeros(5, 7))  # constant map -> zeros, not 0/0
    nearest = upsample_unit(cam, (4, 4), mode="nearest")
    assert torch.allclose(nearest[0, ::2, ::2], cam[0] / (8 + 1e-7))


def test_invalid_choices(net, x):
    with pytest.raises(ValueError, match="'gradcam\\+\\+'.*'gradcam', 'xgradcam', 'layercam'"):
        class_activation_maps(net, x, "gradcam++")
    with pytest.raises(ValueError, match="'nope'"):
        unit_maps(net, x, "nope")
    with pytest.raises(ValueError, match="'nope'"):
        gradcam_package_maps(net, x, "nope")
    with pytest.raises(ValueError, match="'cuda-magic'.*'torch', 'grad-cam'"):
        unit_maps(net, x, backend="cuda-magic")


def test_package_method_names():
    assert {"gradcam", "xgradcam", "layercam", "gradcam++", "hirescam", "eigencam", "scorecam"} <= set(package_cams())
    assert package_cams()["gradcam"] is GradCAM
