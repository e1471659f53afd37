"""A tiny CNN for the scikit-learn 8x8 digits and other small grey-scale sets, trainable on CPU.

The deep backbones are overkill for 8x8 images and too slow for CPU smoke runs. This net keeps
a single 2x2 max-pool, so an 8x8 digit still yields a 4x4 class-activation map (the CAMs are the
whole point of PART), and ends in adaptive pooling so the same weight shapes serve any input
size. Convs use He (fan-out, ReLU) init as in torchvision's ResNets; BatchNorm follows every conv
so the train/eval mode switches of the attacks behave as with the large models. Its cost is its
convolutions, which grow with the square of ``width`` (channels of the first conv), so a CPU demo
can take a narrower net.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(in_planes: int, out_planes: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_planes),
        nn.ReLU(),
    )


WIDTH = 32
"""Channels of the first conv by default; the next two convs double it each time (32, 64, 128)."""


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = WIDTH) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, width),
            _conv_bn_relu(width, 2 * width),
            nn.MaxPool2d(2),
            _conv_bn_relu(2 * width, 4 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * width, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    @property
    def cam_layer(self) -> nn.Module:
        """Last conv block (after its ReLU), the deepest map with spatial extent."""
        return self.features[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


def small_cnn(num_classes: int = 10, in_channels: int = 1, width: int = WIDTH) -> SmallCNN:
    return SmallCNN(num_classes, in_channels, width)
