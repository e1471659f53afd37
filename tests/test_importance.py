"""Importance recipes and ε-maps: hand-checkable cases and matplotlib's jet as the oracle."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

from part.training.importance import RECIPES, eps_map, importance_mask, jet_rgb


def test_default_one_hot_pixel():
    unit = torch.zeros(1, 4, 4)
    unit[0, 1, 2] = 1.0
    mask = importance_mask(unit)
    # 15 zeros and a one: mean 1/16, population std sqrt(15)/16, so z = sqrt(15) at the hot pixel.
    expected = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    expected[0, 0, 1, 2] = True
    assert mask.dtype == torch.bool and torch.equal(mask, expected)


def test_default_squares_before_standardising():
    # 0.8 is more than one std above the mean of the linear map but not of the squared one:
    # squared, mean .30625 and std .4055 give z = .82 for .64, 1.24 for .81 and 1.71 for 1.
    unit = torch.tensor([[[0.0, 0.0, 0.0, 0.0, 0.0, 0.8, 0.9, 1.0]]])
    z_linear = (unit - unit.mean()) / unit.std(correction=0)
    assert (z_linear > 1).sum() == 3
    assert importance_mask(unit)[0, 0, 0].tolist() == [False] * 6 + [True, True]


def test_default_standardises_with_the_population_std():
    """np.std's ddof=0, the release's: squared values 1, .9, .1, 0 have mean .5 and std .4528 (ddof=0), so
    z = 1.10 for 1 — important — but 0.96 with the sample std (.5228, ddof=1)."""
    squared = np.array([1.0, 0.9, 0.1, 0.0])
    z = (squared - squared.mean()) / squared.std()
    assert (z > 1).tolist() == [True, False, False, False]
    assert not ((squared - squared.mean()) / squared.std(ddof=1) > 1).any()
    unit = torch.tensor(np.sqrt(squared), dtype=torch.float32).reshape(1, 2, 2)
    assert importance_mask(unit).flatten().tolist() == (z > 1).tolist()


def test_default_constant_map_has_no_important_pixel():
    for value in (0.0, 0.1, 1.0):
        assert not importance_mask(torch.full((2, 8, 8), value)).any()
    # The release standardises R, G and B together, so a constant map still marks a whole channel:
    # jet(0.1 ** 2) = (0, 0, 0.54) puts blue sqrt(2) standard deviations above the mean.
    jet = importance_mask(torch.full((1, 32, 32), 0.1), "official_jet")
    assert jet[0, 2].all() and not jet[0, :2].any()


def test_default_batch_independence_and_shape():
    unit = torch.rand(5, 12, 10, generator=torch.Generator().manual_seed(0))
    mask = importance_mask(unit)
    assert mask.shape == (5, 1, 12, 10) and mask.dtype == torch.bool
    assert all(torch.equal(importance_mask(unit[i : i + 1])[0], mask[i]) for i in range(5))
    assert 0 < mask.float().mean() < 0.5


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-7), (torch.float64, 0.0)])
def test_jet_lookup_matches_matplotlib(dtype, tol):
    rng = np.random.default_rng(0)
    values = rng.random((4, 33, 33)).astype(np.float32 if dtype == torch.float32 else np.float64)
    values[0, 0, :12] = [0.0, 1.0, 0.5, 1 / 256, 255 / 256, 1 - 1e-7, 2 / 256 - 1e-7, -0.1, -1e-9, 1.5, 1e9, np.nan]
    expected = matplotlib.colormaps["jet"](values)[..., :3]
    ours = jet_rgb(torch.from_numpy(values)).numpy()
    assert ours.shape == values.shape + (3,)
    assert np.abs(ours - expected).max() <= tol


def test_official_jet_matches_release_formula():
    rng = np.random.default_rng(1)
    unit = rng.random((3, 16, 16)).astype(np.float32)
    unit[0] = np.outer(np.linspace(0, 1, 16), np.linspace(0, 1, 16))
    mask = importance_mask(torch.from_numpy(unit), "official_jet")
    assert mask.shape == (3, 3, 16, 16) and mask.dtype == torch.bool
    for i in range(3):
        # JiachengZ01/PART utils.py: cmap(overlay ** 2), one np.mean / np.std over H x W x 3.
        rgb = (255 * matplotlib.colormaps["jet"](unit[i] ** 2)[:, :, :3]).astype(np.double) / 255
        z = (rgb - np.mean(rgb)) / np.std(rgb)
        assert np.array_equal(mask[i].numpy(), (z > 1).transpose(2, 0, 1))
    assert (mask[:, 0] != mask[:, 2]).any()  # channels get different budgets


def test_official_jet_smooth_map_channels_differ():
    ramp = torch.linspace(0, 1, 64).expand(64, 64)[None]
    mask = importance_mask(ramp, "official_jet")
    assert mask.shape == (1, 3, 64, 64)
    assert not torch.equal(mask[0, 0], mask[0, 1]) or not torch.equal(mask[0, 0], mask[0, 2])
    assert torch.equal(mask, mask[:, :, :1].expand_as(mask))  # rows alike, as the ramp is


def test_invalid_recipe_and_shape():
    with pytest.raises(ValueError, match="'jet'.*'default', 'official_jet'"):
        importance_mask(torch.rand(1, 4, 4), "jet")
    with pytest.raises(ValueError, match="shape"):
        importance_mask(torch.rand(1, 1, 4, 4))
    assert RECIPES == ("default", "official_jet")


def test_eps_map_values():
    mask = importance_mask(torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(2)), "official_jet")
    eps = eps_map(mask, 8 / 255, 7 / 255)
    assert eps.shape == mask.shape and eps.dtype == torch.float32
    assert torch.equal(eps == torch.tensor(8 / 255), mask)
    assert set(eps.unique().tolist()) == {torch.tensor(8 / 255).item(), torch.tensor(7 / 255).item()}
    same = eps_map(mask, 8 / 255, 8 / 255)
    assert torch.equal(same, torch.full_like(same, 8 / 255))

