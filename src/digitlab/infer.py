"""Inference with an exported ONNX model; onnxruntime only, never torch.

Minimal version for the reader branch, with the own-model branch's interface (that branch owns the
full one). A model is an `.onnx` file taking normalized float32 [N, 1, 28, 28] and giving logits
[N, 10], plus its card `<same name>.json`: {"normalization": {"mean", "std"}, "temperature"}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .errors import ModelError

ASSETS = Path(__file__).resolve().parent / "assets"


class OnnxModel:
    def __init__(self, path: str | os.PathLike, threads: int = 1, temperature: float | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: ONNX model not found")
        card = self.path.with_suffix(".json")
        self.card: dict = json.loads(card.read_text(encoding="utf-8")) if card.is_file() else {}
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for any bad file
            raise ModelError(f"{self.path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name
        norm = self.card.get("normalization", {"mean": 0.1307, "std": 0.3081})
        self.mean, self.std = float(norm["mean"]), float(norm["std"])
        self.temperature = float(temperature if temperature is not None else self.card.get("temperature", 1.0))

    def predict_proba(self, images: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """uint8 [N, 28, 28] (ink bright) -> class probabilities float32 [N, 10], temperature-scaled."""
        x = np.asarray(images, dtype=np.float32).reshape(-1, 1, 28, 28)
        if len(x) == 0:
            return np.zeros((0, 10), np.float32)
        x = (x / 255.0 - self.mean) / self.std
        z = self.session.run(None, {self.input_name: x})[0].astype(np.float64) / (temperature or self.temperature)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return (z / z.sum(axis=1, keepdims=True)).astype(np.float32)


def bundled() -> OnnxModel:
    """The model shipped inside the package (assets/digit-model.onnx + digit-model.json)."""
    return OnnxModel(ASSETS / "digit-model.onnx")
