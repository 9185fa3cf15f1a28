"""Inference with an exported ONNX model; onnxruntime only, never torch.

Minimal version for the reader branch (the own-model branch owns the full one). A model is an
`.onnx` file taking float32 [N, 1, 28, 28] pixel values 0-255 (ink bright, MNIST-style) and giving
logits [N, 10], plus an optional card `<same name>.json` (metadata such as `temperature`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import ModelError

ASSETS = Path(__file__).resolve().parent / "assets"


class OnnxModel:
    def __init__(self, path: str | os.PathLike) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: model file not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for any bad file
            raise ModelError(f"{self.path}: not a usable ONNX model ({str(e).splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name
        card = self.path.with_suffix(".json")
        self.card: dict = json.loads(card.read_text(encoding="utf-8")) if card.is_file() else {}

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 28, 28] (ink bright) -> class probabilities float32 [N, 10]."""
        x = np.asarray(images, dtype=np.float32).reshape(-1, 1, 28, 28)
        if len(x) == 0:
            return np.zeros((0, 10), np.float32)
        logits = self.session.run(None, {self.input_name: x})[0].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def bundled() -> OnnxModel:
    """The model shipped inside the package (assets/digit-model.onnx + digit-model.json)."""
    return OnnxModel(ASSETS / "digit-model.onnx")
