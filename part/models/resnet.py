"""CIFAR ResNet-18 as in kuangliu/pytorch-cifar, the backbone of the PART, MART and TRADES experiments.

The ImageNet stem (7x7 stride-2 conv + max-pool) would reduce a 32x32 image to 1x1 at
``layer4``; the CIFAR variant keeps full resolution with a 3x3 stride-1 stem, so ``layer4`` still
has a 4x4 map for the class-activation maps PART turns into per-pixel budgets. The reference's
``F.avg_pool2d(out, 4)`` is replaced by adaptive pooling: identical at 32x32, and it also accepts
8x8 digits and 64x64 TinyImageNet. Initialisation is PyTorch's default, as in the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def residual_stages(block: Callable[[int, int, int], nn.Module], num_blocks: Sequence[int]) -> list[nn.Sequential]:
    """The four stages of the CIFAR ResNets (64-512 planes, strides 1, 2, 2, 2), plain or pre-activation."""
    stages, in_planes = [], 64
    for planes, n, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
        blocks = []
        for s in [stride] + [1] * (n - 1):
            blocks.append(block(in_planes, planes, s))
            in_planes = planes
        stages.append(nn.Sequential(*blocks))
    return stages


class ResNet(nn.Module):
    def __init__(self, num_blocks: list[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1, self.layer2, self.layer3, self.layer4 = residual_stages(BasicBlock, num_blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    @property
    def cam_layer(self) -> nn.Module:
        """Last residual stage: the deepest map that still has spatial extent (Grad-CAM's usual pick)."""
        return self.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))


def resnet18(num_classes: int = 10, in_channels: int = 3) -> ResNet:
    return ResNet([2, 2, 2, 2], num_classes, in_channels)
