"""ResNet-34 (He et al. 2015): BasicBlocks [3, 4, 6, 3] at 64/128/256/512 channels, for 1x28x28 input.

The stem is the paper's (7x7 conv stride 2, then 3x3 max-pool stride 2), so the four stages run at
7x7, 4x4, 2x2 and 1x1 -- the same 32x reduction as at 224x224. A stride-1 stem would cost 16x the
compute, which a 2-core CPU cannot afford. Trained with random-affine augmentation, batch 64 and a
one-cycle schedule whose peak LR comes from the LR finder when `lr` is 0. Five epochs: a GPU sweep
(BENCHMARKS.md) gave 99.34% in 4 epochs and 99.44-99.47% in 5-6 at peak LRs of 2e-3 to 4e-3.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .neural import NeuralClassifier, NeuralConfig


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm; the input is added back (through a 1x1 conv when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        nn.init.zeros_(self.bn2.weight)  # each block starts as the identity: trains faster (Goyal et al.)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet(blocks: tuple[int, ...] = (3, 4, 6, 3), widths: tuple[int, ...] = (64, 128, 256, 512)) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(1, widths[0], 7, 2, 3, bias=False), nn.BatchNorm2d(widths[0]),
                               nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    c_in = widths[0]
    for stage, (n, c_out) in enumerate(zip(blocks, widths, strict=True)):
        for i in range(n):
            layers.append(BasicBlock(c_in, c_out, stride=2 if i == 0 and stage > 0 else 1))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, 10)]
    return nn.Sequential(*layers)


@dataclass
class ResNetConfig(NeuralConfig):
    epochs: int = 5
    batch_size: int = 64
    lr: float = 0.0  # 0: run the LR finder first and use its suggestion
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    augment: float = 0.5


class ResNet34(NeuralClassifier):
    family = "resnet34"
    Config = ResNetConfig

    def build(self) -> nn.Module:
        return resnet((3, 4, 6, 3))

    @staticmethod
    def split(net: nn.Module) -> list[nn.Module]:  # fastai's cut: stem + stages 1-2 | stages 3-4 | pool + linear
        return [net[:11], net[11:20], net[20:]]
