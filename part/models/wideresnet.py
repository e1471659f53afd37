"""WideResNet-34-10 as in the TRADES (yaodongyu/TRADES) and MART (YisenWang/MART) reference code.

Module and parameter names (``block1..block3``, ``bn1``, ``relu``, ``fc``, ``convShortcut``)
follow the reference so its state dicts load. Three deliberate differences:

* the reference also builds a ``sub_block1`` stage that its ``forward`` never calls; it is left
  out, so the model has the 46,160,474 parameters (10 classes) that WRN-34-10 is quoted with,
  no parameter sits idle in the optimiser or trips DDP's unused-parameter check, and a
  reference checkpoint loads once its ``sub_block1.*`` keys are dropped;
* adaptive pooling replaces ``F.avg_pool2d(out, 8)``: identical at 32x32, and also valid for
  64x64 TinyImageNet or 8x8 digits;
* those references train with dropout 0, so the dropout branch is left out.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.convShortcut = (
            None
            if in_planes == out_planes
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # As in the reference, a projecting block shares its pre-activation with the shortcut.
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return out + (x if self.convShortcut is None else self.convShortcut(act))


class NetworkBlock(nn.Module):
    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                BasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(
        self,
        depth: int = 34,
        num_classes: int = 10,
        widen_factor: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, channels[0], channels[1], 1)
        self.block2 = NetworkBlock(n, channels[1], channels[2], 2)
        self.block3 = NetworkBlock(n, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels[3], num_classes)
        # The reference's He-normal (fan-out) init; the linear weight keeps PyTorch's default.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    @property
    def cam_layer(self) -> nn.Module:
        """Last block group (before the final BN-ReLU), the WRN counterpart of ResNet's ``layer4``."""
        return self.block3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(torch.flatten(self.pool(out), 1))


def wrn34_10(num_classes: int = 10, in_channels: int = 3) -> WideResNet:
    return WideResNet(34, num_classes, 10, in_channels)
