"""Teach a trained model someone's handwriting from a few labelled examples, without forgetting MNIST.

    digitlab finetune bundled --images my-digits/ --out runs/my-model

`my-digits/0/*.png ... my-digits/9/*.png` are read through the reader's preprocessing (so the model
sees what `digitlab predict` will show it), mixed with a sample of MNIST ("rehearsal": the old task
keeps a say in every batch), and the model is fine-tuned the fastai way (train.fine_tune: the head
with the body frozen, then everything with lower LRs for the early layers). The result is a lab
model directory with a card (base, data, command, before/after figures) and an ONNX export made
like the bundled model's.

The bundled model ships as ONNX only, with its batch norms folded into the convolutions.
`load_base("bundled")` rebuilds the torch network from it: the convolution weights as they are, and
each folded batch norm unfolded again with statistics measured on MNIST training images, which
leaves the network's function unchanged (eval mode) while training mode sees real statistics.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from digitlab import card as model_card
from digitlab import data
from digitlab.errors import DataError, ImageError, ModelError
from digitlab.files import atomic_write_json, read_json

from . import models
from .models.base import config_from
from .models.neural import NeuralClassifier


@dataclasses.dataclass
class FinetuneConfig:
    epochs: int = 2  # all layers, after the head-only epoch
    freeze_epochs: int = 1  # head only, body frozen
    lr: float = 1e-3  # the head's peak LR in the frozen phase (all layers peak at half of it, the first at 1/100)
    lr_div: float = 100.0  # first group's LR = last group's / lr_div (fastai's slice(lo, hi))
    method: str = "fastai"  # fastai | all (every layer at one LR) | head (head only)
    rehearsal: int = 3000  # MNIST training images mixed in
    repeats: int = 0  # copies of each user image per epoch; 0: enough for a third of the epoch
    min_per_class: int = 1
    seed: int = 0


# ---------------------------------------------------------------------------- the base model
def load_base(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> NeuralClassifier:
    """A lab model directory, an exported .onnx file of a plain Sequential family, or "bundled"."""
    path = models.resolve(spec)
    if path.is_dir():
        model = models.load(path)
        if not isinstance(model, NeuralClassifier):
            raise ModelError(f"{path}: a {model.family} model cannot be fine-tuned; use a neural one "
                             "(mlp, cnn, fast, best, resnet34)")
        return model
    if path.suffix == ".onnx" and path.is_file():
        return from_onnx(path, data_dir)
    raise ModelError(f"{spec}: not a model directory, an .onnx file or 'bundled'")


def from_onnx(path: Path, data_dir: str | os.PathLike | None = None, stats_images: int = 2000) -> NeuralClassifier:
    """The torch model behind an ONNX file exported by `digitlab export` (batch norms folded)."""
    import onnx
    import torch
    from onnx import numpy_helper
    from torch import nn

    from .loop import to_tensor

    card = model_card.read(path)
    family = card.get("family")
    cls = models.family_class(family) if family in models.FAMILIES else None
    if cls is None or not issubclass(cls, NeuralClassifier):
        raise ModelError(f"{path}: its card names family {family!r}, not a neural family")
    # JSON gives lists back; the configs' sequences (widths) are tuples
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in card.get("config", {}).items()}
    model = cls(config_from(cls.Config, settings))
    net = model.net
    weights = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
               for i in onnx.load(str(path)).graph.initializer}
    if not isinstance(net, nn.Sequential) or any("weight_bias" not in k and k.count(".") != 1 for k in weights
                                                  if k.endswith(("weight", "bias"))):
        raise ModelError(f"{path}: only plain Sequential networks (mlp, cnn, fast, best) can be rebuilt from ONNX")
    unfold: list[tuple[nn.Conv2d, nn.BatchNorm2d, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for index, layer in enumerate(net):
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer.weight.copy_(weights[f"{index}.weight"])
                    after = net[index + 1] if index + 1 < len(net) else None
                    if isinstance(after, nn.BatchNorm2d):  # folded: conv(x) + weight_bias
                        unfold.append((layer, after, weights[f"{index}.weight_bias"]))
                    elif layer.bias is not None:
                        layer.bias.copy_(weights[f"{index}.bias"])
    except (KeyError, RuntimeError) as e:
        raise ModelError(f"{path}: its weights do not fit the {family} architecture ({e})") from None
    if unfold:
        images, _ = data.load("mnist", "train", data_dir)
        pick = np.random.default_rng(0).choice(len(images), stats_images, replace=False)
        _unfold_batchnorm(net, unfold, to_tensor(images[pick]))
    net.eval()
    return model


def _unfold_batchnorm(net, unfold: list, x) -> None:
    """Gives each folded batch norm the statistics (mean m, variance v) of its convolution's output z
    and the affine part that undoes them: (z - m) / sqrt(v + eps) * sqrt(v + eps) + (b + m) = z + b,
    the folded function exactly; in training mode the batch statistics are then close to m and v."""
    import torch

    stats = {}
    hooks = [conv.register_forward_hook(lambda mod, inp, out: stats.__setitem__(mod, out.detach()))
             for conv, _, _ in unfold]
    for _, bn, bias in unfold:  # identity-like first, so that each layer sees its exact input
        with torch.no_grad():
            bn.running_mean.zero_(), bn.running_var.fill_(1 - bn.eps), bn.weight.fill_(1.0), bn.bias.copy_(bias)
    net.eval()
    with torch.no_grad():
        net(x)
        for conv, bn, bias in unfold:
            z = stats[conv].float()
            mean, var = z.mean(dim=(0, 2, 3)), z.var(dim=(0, 2, 3), unbiased=False)
            bn.running_mean.copy_(mean), bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps)), bn.bias.copy_(bias + mean)
    for hook in hooks:
        hook.remove()


# ---------------------------------------------------------------------------- the user's images
def read_examples(root: str | os.PathLike, min_per_class: int = 1) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images uint8 [N, 28, 28], labels [N] and file names from `root/<digit>/*`, each image through
    the reader's preprocessing. Raises DataError naming what is wrong with the folder."""
    from digitlab.reader.pipeline import preprocess

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (expected {root}/0/ ... {root}/9/ holding images)")
    files = data.image_files(root)
    digits = data.get("mnist").classes
    folders = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else "." for p in files]
    stray = sorted({f"{folder}/" if folder != "." else "the top folder" for folder in folders if folder not in digits})
    if stray:
        raise DataError(f"{root}: images outside the class folders 0-9, in {', '.join(stray[:5])}")
    counts = {d: folders.count(d) for d in digits}
    missing = [d for d, n in counts.items() if n == 0]
    if len(missing) == 10:
        raise DataError(f"{root}: no images found in class folders 0/ .. 9/")
    if missing:
        raise DataError(f"{root}: no examples of digit{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                        f"(each of 0-9 needs at least {min_per_class})")
    few = [f"{d} ({n})" for d, n in counts.items() if n < min_per_class]
    if few:
        raise DataError(f"{root}: too few examples: need at least {min_per_class} of each digit; "
                        f"have {', '.join(few)}")
    images, labels, names, bad = [], [], [], []
    for path in files:
        try:
            images.append(preprocess(path))
        except ImageError as e:
            reason = str(e).removeprefix(f"{path}: ")
            bad.append(f"{path.relative_to(root)} ({reason})")
            continue
        labels.append(int(path.relative_to(root).parts[0]))
        names.append(str(path.relative_to(root)))
    if bad:
        raise DataError(f"{root}: {len(bad)} unreadable image{'s' if len(bad) > 1 else ''}: {'; '.join(bad[:3])}"
                        + (" ..." if len(bad) > 3 else ""))
    return np.stack(images), np.array(labels, dtype=np.int64), names


# ---------------------------------------------------------------------------- fine-tuning
def mix_rehearsal(x: np.ndarray, y: np.ndarray, x_old: np.ndarray, y_old: np.ndarray, repeats: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The user's images, each `repeats` times (0: enough to be a third of the mix), with the old data."""
    repeats = repeats or max(1, round(len(x_old) / (2 * len(x))))
    xs, ys = np.concatenate([np.tile(x, (repeats, 1, 1)), x_old]), np.concatenate([np.tile(y, repeats), y_old])
    order = np.random.default_rng(seed).permutation(len(xs))
    return xs[order], ys[order]


def adapt(model: NeuralClassifier, x: np.ndarray, y: np.ndarray, x_old: np.ndarray, y_old: np.ndarray,
          config: FinetuneConfig) -> NeuralClassifier:
    """Fine-tunes `model` in place on (x, y) mixed with the rehearsal sample (x_old, y_old)."""
    import torch

    from .augment import with_not_one_digit
    from .loop import to_tensor
    from .precision import resolve_precision
    from .transfer import fit_one_cycle, freeze

    if model.config.not_one_digit:  # keep reading a wrong cut through touching digits as unsure: rehearse that too
        x_old, y_old = with_not_one_digit(x_old, y_old, model.config.not_one_digit, config.seed)
    xs, ys = mix_rehearsal(x, y, x_old, y_old, config.repeats, config.seed)
    # the precision the base trained in is a record of its machine: this one picks its own (bf16 only
    # where native; emulated bf16 fine-tunes 6-10x slower on an AVX2-only CPU)
    model.config = dataclasses.replace(model.config, seed=config.seed,
                                       precision=resolve_precision("auto", model.device))
    if config.method == "fastai":
        return model.fine_tune(xs, ys, config.epochs, config.freeze_epochs, config.lr, config.lr_div)
    groups = model.layer_groups()
    if config.method == "all":  # every layer, one LR: plain fine-tuning
        lr, epochs = config.lr / 2, config.epochs + config.freeze_epochs
    elif config.method == "head":
        freeze(groups)
        lr, epochs = config.lr, config.epochs + config.freeze_epochs
    else:
        raise ValueError(f"unknown fine-tuning method {config.method!r}; use fastai, all or head")
    learner = fit_one_cycle(model.net, groups, to_tensor(xs), torch.from_numpy(ys), model.config, epochs, lr,
                            device=model.device)
    model.history_ = model.history + [{**h, "phase": config.method} for h in learner.history]
    model.net.eval()
    return model


def rehearsal_sample(n: int, seed: int, data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """n MNIST training images, the same number of each digit, seeded; drawn from the training part
    of the seed-0 hold-out split, so `calibration_sample` stays unseen."""
    (images, labels), _ = data.holdout(*data.load("mnist", "train", data_dir), seed=0)
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(labels == d), n // 10, replace=False) for d in range(10)])
    return images[pick], labels[pick]


def calibration_sample(data_dir=None) -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST training images the bundled model held out (the seed-0 split): fine-tuning
    never trains on them, so the temperature is fitted there and the test split only measures."""
    return data.holdout(*data.load("mnist", "train", data_dir), seed=0)[1]


def finetune(base: str | os.PathLike, images: str | os.PathLike, out: str | os.PathLike,
             config: FinetuneConfig | None = None, data_dir=None, command: str | None = None, log=None) -> dict:
    """The `digitlab finetune` workflow; returns the figures written to OUT/metrics.json.

    MNIST test accuracy is measured on ONNX files with onnxruntime (3x faster than PyTorch here):
    before, the base's recorded figure (its card or metrics.json) when it has one; after, the export's."""
    from digitlab.reader.calibration import fit_temperature
    from digitlab.reader.infer import OnnxModel

    from .export import export

    config = config or FinetuneConfig()
    log = log or (lambda line: print(line, file=sys.stderr))
    t0 = time.perf_counter()
    x, y, _ = read_examples(images, config.min_per_class)
    model = load_base(base, data_dir)
    x_test, y_test = data.load("mnist", "test", data_dir)
    before = {"mnist_test_accuracy": recorded_accuracy(base), "own_images_accuracy": model.score(x, y)}
    if before["mnist_test_accuracy"] is None:
        before["mnist_test_accuracy"] = model.score(x_test, y_test)
    log(f"{base}: MNIST test accuracy {before['mnist_test_accuracy']:.4f}, on the {len(x)} images "
        f"{before['own_images_accuracy']:.4f}; fine-tuning ({config.method}, {config.rehearsal:,} MNIST images "
        "rehearsed)")
    x_old, y_old = rehearsal_sample(config.rehearsal, config.seed, data_dir)
    t1 = time.perf_counter()
    adapt(model, x, y, x_old, y_old, config)
    train_time = time.perf_counter() - t1

    out = Path(out)
    command = command or f"digitlab finetune {base} --images {images} --out {out}"
    model.save(out, {"dataset": "mnist", "seed": config.seed, "command": command, "base_model": str(base),
                     "fine_tuned_on": str(images), "normalization": model.normalization,
                     "split": {"train_images": len(x) + len(x_old), "val_images": 0}})
    metrics = {
        "family": model.family, "dataset": "mnist", "seed": config.seed,
        "command": command,
        "train_time_s": round(train_time, 2),
        "fine_tuning": {
            "base_model": str(base), "images": str(Path(images).resolve()), "n_images": len(x),
            "per_class": np.bincount(y, minlength=10).tolist(), "rehearsal_mnist_train_images": len(x_old),
            "settings": dataclasses.asdict(config), "before": before,
            "after": {"own_images_accuracy": model.score(x, y)},
            "note": "Accuracy on the fine-tuning images is measured on those images themselves (not held out).",
        },
    }
    atomic_write_json(out / "metrics.json", metrics)
    onnx_path = export(out, card=fine_tuning_card(metrics, len(x_old)))
    # the export measured MNIST test accuracy on the file; the temperature is fitted on held-out
    # training images so that confidences stay honest and the test split only measures
    after = model_card.read(onnx_path)["test"]["accuracy"]
    metrics["test_accuracy"] = metrics["fine_tuning"]["after"]["mnist_test_accuracy"] = after
    x_cal, y_cal = calibration_sample(data_dir)
    temperature = fit_temperature(OnnxModel(onnx_path, threads=0, temperature=1.0).predict_proba(x_cal), y_cal)
    model_card.update(onnx_path, **fine_tuning_card(metrics, len(x_old)), temperature=temperature,
                      calibration="temperature fitted (NLL) on the 5,000 MNIST training images of the seed-0 "
                                  "hold-out, which fine-tuning never trains on; the test split only measures")
    metrics["onnx"] = str(onnx_path)
    metrics["total_time_s"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def recorded_accuracy(base: str | os.PathLike) -> float | None:
    """The MNIST test accuracy a base model's card or metrics.json records, if any."""
    path = models.resolve(base)
    try:
        if path.is_dir():
            metrics = read_json(path / "metrics.json")
            return float(metrics["test_accuracy"]) if metrics.get("dataset", "mnist") == "mnist" else None
        return float(model_card.read(path)["test"]["accuracy"])
    except (OSError, ValueError, KeyError, TypeError, ModelError):
        return None


def fine_tuning_card(metrics: dict, rehearsal: int) -> dict:
    """What the exported card says beyond `export.make_card`: the base, the data, before and after."""
    ft = metrics["fine_tuning"]
    return {
        "training_data": f"fine-tuned from {ft['base_model']} on {ft['n_images']} images of {ft['images']} "
                         f"(per digit: {ft['per_class']}) mixed with {rehearsal:,} MNIST training images",
        "command": metrics["command"],
        "fine_tuning": {k: ft[k] for k in ("base_model", "images", "n_images", "per_class", "settings",
                                           "before", "after", "note")},
    }
