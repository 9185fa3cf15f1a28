"""A dense network: 784 pixels -> two ReLU layers -> 10 classes, with dropout between them.

With `dropout=0` it memorizes the training set within a few epochs (validation loss falls, then
rises, while training accuracy heads to 100%); the default dropout closes most of that gap.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .neural import NeuralClassifier, NeuralConfig


@dataclass
class MLPConfig(NeuralConfig):
    epochs: int = 15
    batch_size: int = 128
    lr: float = 1e-3
    hidden: int = 512
    layers: int = 2
    dropout: float = 0.2
    channels_last: bool = False  # no convolutions: a plain [N, 784] matrix is fastest


class MLP(NeuralClassifier):
    family = "mlp"
    Config = MLPConfig

    def build(self) -> nn.Module:
        c = self.config
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for _ in range(c.layers):
            layers += [nn.Linear(width, c.hidden), nn.ReLU(), nn.Dropout(c.dropout)]
            width = c.hidden
        layers.append(nn.Linear(width, 10))
        return nn.Sequential(*layers)

    @staticmethod
    def split(net: nn.Module) -> list[nn.Module]:  # fine-tuning: first hidden layer | the others | output layer
        return [net[:4], net[4:-1], net[-1:]]
