"""Exports a trained neural model to ONNX (fp32, or int8 by static quantization) with its model card.

    digitlab export runs/best [--quantize int8] [--out model.onnx] [--bundle]

The network is exported without its normalization; the card (`digitlab.card`: inside the ONNX file
and beside it) records mean/std, the dataset, split and command of the run that made the model, so
that `digitlab.reader.infer` takes raw uint8 pixels. The card's accuracy is measured on the
dataset's test split with the exported file itself, through onnxruntime.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import platform
import tempfile
import warnings
from pathlib import Path

import numpy as np

from digitlab import card as model_card
from digitlab.errors import ModelError
from digitlab.files import read_json
from digitlab.progress import Progress
from digitlab.reader.calibration import expected_calibration_error, fit_temperature
from digitlab.reader.infer import BUNDLED, OnnxModel

OPSET = 18


def export(model_dir: str | os.PathLike, out: str | os.PathLike | None = None, quantize: str | None = None,
           bundle: bool = False, calibration_size: int = 1000, card: dict | None = None) -> Path:
    """Writes MODEL.onnx (card inside), MODEL.json (the same card) and MODEL.md; returns the .onnx path.
    `card` entries replace or extend the generated card's (a fine-tuned model's base, data and figures)."""
    from digitlab.data import load

    from .models import load as load_model
    from .models.neural import NeuralClassifier

    model_dir = Path(model_dir)
    model = load_model(model_dir)
    if not isinstance(model, NeuralClassifier):
        raise ModelError(f"{model_dir}: only neural models export to ONNX (this is {model.family!r})")
    if quantize not in (None, "int8"):
        raise ModelError(f"unknown quantization {quantize!r}; use int8")
    run = read_run(model_dir)
    norm = run["normalization"]
    # bundle with an `out`: staged there first (the CLI's --bundle checks it before replacing the shipped model)
    out = Path(out or (BUNDLED if bundle else model_dir / ("model-int8.onnx" if quantize else "model.onnx")))
    bar = Progress(f"export {model_dir.name}", total=3 if quantize else 2)
    bar.update(0, "tracing to ONNX")
    onnx_bytes = to_onnx(model.net)
    if quantize:
        from .loop import normalize

        bar.update(1, "quantizing to int8")
        train_images, _ = load(run["dataset"], "train")
        calibration = np.random.default_rng(0).choice(len(train_images), calibration_size, replace=False)
        onnx_bytes = quantize_int8(onnx_bytes, normalize(train_images[calibration], norm["mean"], norm["std"]))
    card = {**make_card(model, model_dir, run, quantize, bundle, None if bundle else out), **(card or {})}
    model_card.write(out, onnx_bytes, card)
    # The card's figures are measured on the written file itself, through onnxruntime.
    bar.update(bar.total - 1, "calibrating on the hold-out, scoring the exported file on the test set")
    written = OnnxModel(out, threads=0)
    validation = held_out(run, model.config)
    if validation is not None:
        card["temperature"] = fit_temperature(written.predict_proba(validation[0], 1.0), validation[1])
        card["calibration"] = (f"temperature fitted on the run's {run['split']['val_images']:,} held-out validation "
                               "images (the training split's hold-out"
                               + (" and as many realistic renderings of them" if model.config.realistic_views
                                  else "") + "); the test split only measures")
    x_test, y_test = load(run["dataset"], "test")
    card["test"] = written.score(x_test, y_test)
    card["test"]["ece"] = round(expected_calibration_error(written.predict_proba(x_test, card["temperature"]),
                                                           y_test), 5)
    model_card.write(out, onnx_bytes, card)
    bar.close("done", done=bar.total)
    return out


def held_out(run: dict, config) -> tuple[np.ndarray, np.ndarray] | None:
    """The validation images the run held out of training (recomputed from its seed), plus one
    realistic rendering of each when it trained on those: what calibration is fitted on."""
    from digitlab.data import holdout, load

    split = run.get("split") or {}
    if not split.get("val_images"):
        return None
    images, labels = load(run["dataset"], "train")
    if split.get("limit"):
        images, labels = images[:split["limit"]], labels[:split["limit"]]
    _, (x_val, y_val) = holdout(images, labels, run["seed"])
    if getattr(config, "realistic_views", 0):
        from .augment import realistic_views

        x_val = np.concatenate([x_val, realistic_views(x_val, 1, seed=run["seed"] + 1,
                                                       forms=getattr(config, "forms", 0.0))[0]])
        y_val = np.concatenate([y_val, y_val])
    return x_val, y_val


def read_run(model_dir: Path) -> dict:
    """The record of the run that made the model (config.json; older folders lack some fields)."""
    from .loop import MNIST_MEAN, MNIST_STD

    run = read_json(model_dir / "config.json")
    return {"dataset": "mnist", "normalization": {"mean": MNIST_MEAN, "std": MNIST_STD},
            "seed": run["config"].get("seed", 0), **run}


def to_onnx(net) -> bytes:
    """The network in eval mode as ONNX bytes: input "image" [batch, 1, 28, 28] float32, output "logits"."""
    import torch

    net = net.eval().float().to(memory_format=torch.contiguous_format)
    with quiet_onnx_export():
        program = torch.onnx.export(net, (torch.zeros(2, 1, 28, 28),), input_names=["image"],
                                    output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    opset_version=OPSET, dynamo=True, verbose=False)
    return program.model_proto.SerializeToString()


@contextlib.contextmanager
def quiet_onnx_export():
    """torch.export's own deprecation notices and "torchvision is not installed": nothing a user acts
    on. The logger's level is put back afterwards: the caller's logging is the caller's."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def quantize_int8(onnx_bytes: bytes, calibration: np.ndarray) -> bytes:
    """Static int8 quantization (QDQ, per-channel weights) calibrated on normalized training images.

    Weights use 7 bits (`reduce_range`): on x86 CPUs without VNNI, onnxruntime multiplies uint8
    activations by int8 weights with VPMADDUBSW, which adds two products into an int16 and saturates
    when both are large (2 x 255 x 127 > 32767). With weights in [-64, 64] the pair sum stays below
    32767, so the int8 model gives the same answers on every CPU (with 8-bit weights the bundled
    model lost 0.15 point on an AVX2 EPYC; see tests/test_export_infer.py)."""
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
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True)
        return int8.read_bytes()


def training_command(run: dict, family: str, model_dir: Path) -> str:
    """The command that trained the model, after its teachers' own (knowledge distillation), so that
    the card's one line rebuilds it from nothing. Teacher paths are as the run was given them."""
    own = run.get("command") or f"digitlab train {family} --seed {run['seed']} --out {model_dir}"
    teachers = [Path(t.strip()) for t in run.get("config", {}).get("teachers", "").split(",") if t.strip()]
    before = [read_json(t / "config.json").get("command") for t in teachers if (t / "config.json").is_file()]
    return " && ".join([c for c in before if c] + [own])


def make_card(model, model_dir: Path, run: dict, quantize: str | None, bundle: bool = False,
              out: Path | None = None) -> dict:
    import torch

    metrics = read_json(model_dir / "metrics.json") if (model_dir / "metrics.json").is_file() else {}
    train = training_command(run, model.family, model_dir)
    command = (train + f" && digitlab export {model_dir}" + (" --quantize int8" if quantize else "")
               + (" --bundle" if bundle else f" --out {out}" if out else ""))
    fmt = f"onnx opset {OPSET}" + (", int8 static quantization (QDQ, per-channel 7-bit weights)" if quantize else "")
    return model_card.build(
        model.family, fmt, run["normalization"], {**run, "command": command},
        architecture=str(model.net), n_parameters=model.n_parameters(), config=dict(run["config"]),
        train_time_s=metrics.get("train_time_s"), pytorch_test_accuracy=metrics.get("test_accuracy"),
        exported=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d"),
        **({"pipeline_version": run["pipeline_version"]} if run.get("pipeline_version") else {}),
        environment=f"torch {torch.__version__}, Python {platform.python_version()}")
