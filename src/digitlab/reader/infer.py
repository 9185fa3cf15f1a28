"""Digit recognition with an exported ONNX model: onnxruntime, numpy and Pillow only, never torch.

    from digitlab.reader.infer import bundled
    model = bundled()                       # the model shipped in reader/assets, loaded once
    probs = model.predict_proba(images)     # uint8 [N, 28, 28], ink bright -> float32 [N, 10]

The model card (`model.card`, see `digitlab.card`) holds the normalization the network was trained
with, so callers pass raw 0-255 pixels. Loading validates the card and the file's checksum first:
a damaged, changed or foreign file is a ModelError naming it, never an onnxruntime exception.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np

from digitlab import card as model_card
from digitlab.errors import ImageError, ModelError
from digitlab.reader.calibration import softmax
from digitlab.reader.pipeline import PIPELINE_VERSION

ASSETS = Path(__file__).resolve().parent / "assets"
BUNDLED = ASSETS / "digit-model.onnx"


class OnnxModel:
    """An ONNX digit classifier and its model card. `threads=1` gives the lowest single-image latency;
    0 lets onnxruntime use every core (best for large batches)."""

    def __init__(self, path: str | os.PathLike, threads: int = 1, temperature: float | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelError(f"{self.path}: ONNX model not found")
        data = self.path.read_bytes()  # validated and loaded from the same bytes
        self.card = model_card.read_bytes(data, self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ModelError(f"{self.path}: not a loadable ONNX model ({str(e).splitlines()[0]})") from None
        model_card.check_session(self.session, self.card, self.path)
        trained = self.card.get("pipeline_version")
        if trained is not None and trained != PIPELINE_VERSION:
            warnings.warn(f"{self.path}: trained on what reader pipeline v{trained} made of its images, but this "
                          f"reader is v{PIPELINE_VERSION}: it may read less well until retrained "
                          "(the card's command rebuilds it)", stacklevel=2)
        self.input_name = self.session.get_inputs()[0].name
        norm = self.card["normalization"]
        # (x / 255 - mean) / std  ==  x * scale + shift, one fused multiply-add per pixel
        self.scale = np.float32(1.0 / (255.0 * norm["std"]))
        self.shift = np.float32(-norm["mean"] / norm["std"])
        self.temperature = float(temperature if temperature is not None else self.card["temperature"])

    def logits(self, images: np.ndarray) -> np.ndarray:
        """Thread-safe: every call builds its own input array (an onnxruntime session may be run from
        many threads at once, and a buffer shared between calls would mix their images)."""
        x = check_images(images)
        batch = np.multiply(x[:, None], self.scale, dtype=np.float32)
        batch += self.shift
        return self.session.run(None, {self.input_name: batch})[0]

    def predict_proba(self, images: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """uint8 [N, 28, 28] (or one [28, 28] image) -> class probabilities float32 [N, 10]."""
        return softmax(self.logits(images), temperature or self.temperature)

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.logits(images).argmax(axis=1)

    def score(self, images: np.ndarray, labels: np.ndarray, batch_size: int = 2000) -> dict:
        """Accuracy and per-class recall on a labelled set (what `digitlab evaluate bundled` reports)."""
        labels = np.asarray(labels)
        predicted = np.concatenate([self.predict(images[i:i + batch_size])
                                    for i in range(0, len(images), batch_size)])
        return {"accuracy": float((predicted == labels).mean()), "n": int(len(labels)),
                "per_class_recall": {str(c): float((predicted[labels == c] == c).mean())
                                     for c in np.unique(labels)}}


def check_images(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3 or x.shape[1:] != (28, 28):
        raise ImageError(f"expected images of shape [N, 28, 28], got {list(x.shape)}")
    if x.dtype != np.uint8:
        raise ImageError(f"expected uint8 pixels 0-255, got {x.dtype}")
    return x


@functools.cache
def bundled() -> OnnxModel:
    """The model shipped with digitlab (loaded once per process)."""
    return OnnxModel(BUNDLED)
