"""Shared fixtures: a prepared digits file made once per test session, tiny seeded models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from part.data import prepare_digits, save_prepared


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    save_prepared(root / "digits.pt", prepare_digits())
    return root


class TinyNet(nn.Module):
    """A two-layer conv net with batch norm: small enough for exact, fast attack tests."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, num_classes))

    @property
    def cam_layer(self) -> nn.Module:
        return self.features

    def forward(self, x):
        return self.head(self.features(x))


@pytest.fixture
def tiny_net():
    torch.manual_seed(0)
    return TinyNet().eval()
