"""A small ONNX digit model for the reader's tests, trained in well under a minute.

Used when the package has no bundled model (assets/digit-model.onnx) yet; the bundled model is
used when it exists.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def train_tiny_onnx(images: np.ndarray, labels: np.ndarray, path: Path, n: int = 15000, seed: int = 0) -> Path:
    import torch
    from torch import nn

    from digitlab.files import atomic_write_json
    from digitlab.lab.train import MNIST_MEAN, MNIST_STD, Learner, TrainConfig, to_tensor

    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 12, 3), nn.ReLU(), nn.MaxPool2d(2),   # 13x13
        nn.Conv2d(12, 24, 3), nn.ReLU(), nn.MaxPool2d(2),  # 5x5
        nn.Flatten(), nn.Linear(24 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 10),
    )
    config = TrainConfig(epochs=2, batch_size=128, lr=4e-3, augment=0.7, seed=seed, channels_last=False)
    Learner(net, config).fit(to_tensor(images[:n]), torch.from_numpy(labels[:n]))

    net = net.eval()
    torch.onnx.export(net, torch.zeros(1, 1, 28, 28), str(path), input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    atomic_write_json(path.with_suffix(".json"), {
        "name": "reader test model", "input": "uint8 [N, 28, 28], ink bright; infer normalizes",
        "normalization": {"mean": MNIST_MEAN, "std": MNIST_STD}, "temperature": 1.0, "train_images": n})
    return path
