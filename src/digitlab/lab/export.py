"""Exports a trained neural model to ONNX (fp32, or int8 by static quantization) with its model card.

    digitlab export runs/best --format onnx [--quantize int8] [--out model.onnx] [--bundle]

The network is exported without its normalization; the card (JSON beside the .onnx, and a copy in
the ONNX metadata) records mean/std so that `digitlab.infer` can take raw uint8 pixels. The card's
accuracy is measured on the MNIST test set with the exported file itself, through onnxruntime.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np

from digitlab.errors import ModelError
from digitlab.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from digitlab.reader.infer import BUNDLED, OnnxModel

OPSET = 18


def export(model_dir: str | os.PathLike, out: str | os.PathLike | None = None, quantize: str | None = None,
           bundle: bool = False, calibration_size: int = 1000, card: dict | None = None) -> Path:
    """Writes MODEL.onnx, MODEL.json (card) and MODEL.md; returns the .onnx path. `card` entries
    replace or extend the generated card's (a fine-tuned model's base, data and figures)."""
    from digitlab.data import load

    from .models import load as load_model
    from .models.neural import NeuralClassifier
    from .train import MNIST_MEAN, MNIST_STD

    model_dir = Path(model_dir)
    model = load_model(model_dir)
    if not isinstance(model, NeuralClassifier):
        raise ModelError(f"{model_dir}: only neural models export to ONNX (this is {model.family!r})")
    if quantize not in (None, "int8"):
        raise ModelError(f"unknown quantization {quantize!r}; use int8")
    if bundle:
        out = BUNDLED
    elif out is None:
        out = model_dir / ("model-int8.onnx" if quantize else "model.onnx")
    out = Path(out)
    onnx_bytes = to_onnx(model.net)
    if quantize:
        train_images, _ = load("mnist", "train")
        calibration = np.random.default_rng(0).choice(len(train_images), calibration_size, replace=False)
        onnx_bytes = quantize_int8(onnx_bytes, normalize(train_images[calibration], MNIST_MEAN, MNIST_STD))
    card = {**make_card(model, model_dir, onnx_bytes, quantize, (MNIST_MEAN, MNIST_STD), bundle), **(card or {})}
    x_test, y_test = load("mnist", "test")
    atomic_write_bytes(out, embed_card(onnx_bytes, card))
    atomic_write_json(out.with_suffix(".json"), card)  # infer reads the sidecar first
    card["test"] = OnnxModel(out, threads=0).score(x_test, y_test)
    atomic_write_json(out.with_suffix(".json"), card)
    atomic_write_text(out.with_suffix(".md"), card_markdown(card))
    return out


def update_card(onnx_path: str | os.PathLike, changes: dict) -> dict:
    """Merges `changes` into an exported model's card: the embedded copy, the JSON and the markdown."""
    import onnx

    from digitlab.reader.infer import read_card

    onnx_path = Path(onnx_path)
    card = {**read_card(onnx_path), **changes}
    atomic_write_bytes(onnx_path, embed_card(onnx.load(str(onnx_path)).SerializeToString(), card))
    atomic_write_json(onnx_path.with_suffix(".json"), card)
    atomic_write_text(onnx_path.with_suffix(".md"), card_markdown(card))
    return card


def normalize(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    return ((images.astype(np.float32) / 255.0 - mean) / std)[:, None]


def to_onnx(net) -> bytes:
    """The network in eval mode as ONNX bytes: input "image" [batch, 1, 28, 28] float32, output "logits"."""
    import torch

    net = net.eval().float().to(memory_format=torch.contiguous_format)
    # torch.export's own deprecation notices and "torchvision is not installed": nothing a user acts on
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        program = torch.onnx.export(net, (torch.zeros(2, 1, 28, 28),), input_names=["image"],
                                    output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    opset_version=OPSET, dynamo=True, verbose=False)
    return program.model_proto.SerializeToString()


def quantize_int8(onnx_bytes: bytes, calibration: np.ndarray) -> bytes:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on normalized training images."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"image": calibration[i:i + 100]} for i in range(0, len(calibration), 100)])

        def get_next(self):
            return next(self.batches, None)

    with tempfile.TemporaryDirectory() as tmp:
        fp32, pre, int8 = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        fp32.write_bytes(onnx_bytes)
        quant_pre_process(str(fp32), str(pre))  # shape inference and BN folding before quantizing
        quantize_static(str(pre), str(int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return int8.read_bytes()


def embed_card(onnx_bytes: bytes, card: dict) -> bytes:
    import json

    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = "digitlab_card", json.dumps(card)
    proto.producer_name = "digitlab"
    return proto.SerializeToString()


def make_card(model, model_dir: Path, onnx_bytes: bytes, quantize: str | None, norm: tuple[float, float],
              bundle: bool = False) -> dict:
    import torch

    from digitlab.files import read_json

    metrics = read_json(model_dir / "metrics.json") if (model_dir / "metrics.json").is_file() else {}
    seed = model.config.seed
    return {
        "name": "digitlab digit model",
        "family": model.family,
        "format": f"onnx opset {OPSET}" + (", int8 static quantization (QDQ, per-channel)" if quantize else ""),
        "input": "uint8 [N, 28, 28], ink bright on dark (MNIST convention); infer normalizes",
        "output": "logits [N, 10] for digits 0-9; probabilities = softmax(logits / temperature)",
        "normalization": {"mean": norm[0], "std": norm[1]},
        "temperature": 1.0,
        "architecture": str(model.net),
        "n_parameters": model.n_parameters(),
        "config": {k: v for k, v in model.config.__dict__.items()},
        "training_data": "MNIST training set, all 60,000 images (no validation hold-out; the test set "
                         "is only used for the figures below)",
        "command": metrics.get("command", f"python scripts/train_own.py {model.family} --seed {seed} --out {model_dir}")
                   + f" && digitlab export {model_dir}" + (" --quantize int8" if quantize else "")
                   + (" --bundle" if bundle else ""),
        "seed": seed,
        "train_time_s": metrics.get("train_time_s"),
        "pytorch_test_accuracy": metrics.get("test_accuracy"),
        "exported": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        "environment": f"torch {torch.__version__}, Python {platform.python_version()}",
        "sha256": hashlib.sha256(onnx_bytes).hexdigest(),
    }


def card_markdown(card: dict) -> str:
    test = card["test"]
    rows = "\n".join(f"| {c} | {r:.4f} |" for c, r in test["per_class_recall"].items())
    config = "\n".join(f"- `{k}`: {v}" for k, v in card["config"].items())
    return f"""# {card['name']} ({card['family']})

Test accuracy (MNIST test set, {test['n']:,} images, measured on this ONNX file with onnxruntime):
**{test['accuracy']:.4f}**

- Format: {card['format']}
- Input: {card['input']}
- Output: {card['output']}
- Normalization: (pixel / 255 - {card['normalization']['mean']}) / {card['normalization']['std']}
- Temperature: {card['temperature']}
- Parameters: {card['n_parameters']:,}
- Training data: {card['training_data']}
- Seed: {card['seed']}; training time: {card['train_time_s'] and round(card['train_time_s'])} s
- Rebuild: `{card['command']}`
- Exported: {card['exported']} ({card['environment']})

{fine_tuning_markdown(card.get('fine_tuning'))}## Per-class recall

| digit | recall |
|---|---|
{rows}

## Architecture

```
{card['architecture']}
```

## Training configuration

{config}
"""


def fine_tuning_markdown(ft: dict | None) -> str:
    """The card's fine-tuning section: base model, data, settings, before and after."""
    if not ft:
        return ""
    b, a = ft["before"], ft["after"]

    def fig(d: dict, key: str) -> str:
        return f"{d[key]:.4f}" if key in d else "(measured on export)"

    settings = ", ".join(f"{k}={v}" for k, v in ft["settings"].items())
    return f"""## Fine-tuning

- Base model: {ft['base_model']}
- Data: {ft['n_images']} images from {ft['images']} (per digit {ft['per_class']})
- Settings: {settings}

| | before | after |
|---|---|---|
| MNIST test accuracy | {fig(b, 'mnist_test_accuracy')} | {fig(a, 'mnist_test_accuracy')} |
| accuracy on the fine-tuning images | {fig(b, 'own_images_accuracy')} | {fig(a, 'own_images_accuracy')} |

{ft.get('note', '')}

"""
