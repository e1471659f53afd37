"""Pre-activation ResNet-18 (He et al., 2016) as in Rice et al., "Overfitting in adversarially
robust deep learning" (locuslab/robust_overfitting), derived from kuangliu/pytorch-cifar.

Rice et al.'s version adds a final BatchNorm + ReLU after ``layer4`` (a pre-activation network
otherwise feeds un-normalised sums to the classifier); it is kept here because it is the variant
used across the adversarial-training literature. The CIFAR 3x3 stride-1 stem keeps spatial
resolution for the CAMs, and adaptive pooling replaces ``F.avg_pool2d(out, 4)`` so that any input
size works. Initialisation is PyTorch's default, as in the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from part.models.resnet import residual_stages


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection shortcut sees the pre-activated input, as in the reference.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    def __init__(self, num_blocks: list[int], num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.layer1, self.layer2, self.layer3, self.layer4 = residual_stages(PreActBlock, num_blocks)
        self.bn = nn.BatchNorm2d(512)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(512, num_classes)

    @property
    def cam_layer(self) -> nn.Module:
        """Last residual stage, as for the plain ResNet, so CAMs are comparable across backbones."""
        return self.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        return self.linear(torch.flatten(self.pool(out), 1))


def preact_resnet18(num_classes: int = 10, in_channels: int = 3) -> PreActResNet:
    return PreActResNet([2, 2, 2, 2], num_classes, in_channels)
