"""`best`: the accurate single model. Two conv-BN-ReLU layers per stage (24, 48 channels at 28x28 and
14x14), a 96-channel stage at 7x7, then one linear layer; trained with random affine augmentation,
label smoothing, a one-cycle AdamW schedule and bf16 autocast by the loop of `fast`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..train import to_tensor
from .fast import conv_bn, fit_fast
from .neural import NeuralClassifier, NeuralConfig


@dataclass
class BestConfig(NeuralConfig):
    epochs: int = 15
    batch_size: int = 128
    lr: float = 4e-3
    optimizer: str = "adamw"
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    augment: float = 1.0
    widths: tuple[int, int, int] = (24, 48, 96)
    dropout: float = 0.1
    bf16: bool = True


class Best(NeuralClassifier):
    family = "best"
    Config = BestConfig

    def build(self) -> nn.Module:
        a, b, c = self.config.widths
        return nn.Sequential(
            *conv_bn(1, a), *conv_bn(a, a), nn.MaxPool2d(2),     # 28 -> 14
            *conv_bn(a, b), *conv_bn(b, b), nn.MaxPool2d(2),     # 14 -> 7
            *conv_bn(b, c), nn.MaxPool2d(2),                     # 7 -> 3
            nn.Flatten(), nn.Dropout(self.config.dropout), nn.Linear(c * 3 * 3, 10),
        )

    def fit(self, x, y, x_val=None, y_val=None) -> Best:
        fit_fast(self, to_tensor(x), torch.from_numpy(np.asarray(y, dtype=np.int64)), self.callbacks)
        return self
