"""One training run of any model family: data, seeded hold-out, fit, checkpoints, saved model, metrics.

    train_run("cnn", "runs/cnn", epochs=3)   # what `digitlab train cnn --out runs/cnn --epochs 3` does

Neural families get a live progress bar and a checkpoint after every epoch (`<out>/checkpoint/`),
from which `resume=True` continues at the next epoch. Every family follows the Classifier contract,
so classical models go through the same code (fit, score, save) without importing torch.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np

from digitlab import data
from digitlab.errors import DigitlabError, ModelError
from digitlab.files import atomic_write_json, read_json

from . import models

VAL_SIZE = 5000
CHECKPOINT_DIR = "checkpoint"


def limit_train(images: np.ndarray, labels: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` training images (a quick smoke run), or all of them."""
    if limit is None:
        return images, labels
    if limit < 20:
        raise DigitlabError(f"--limit {limit}: need at least 20 training images")
    return images[:limit], labels[:limit]


def holdout(images: np.ndarray, labels: np.ndarray, seed: int):
    """The seeded validation split: 5,000 images, or a tenth of a smaller (--limit) training set."""
    return data.train_val_split(images, labels, min(VAL_SIZE, len(images) // 10), seed=seed)


def make_model(family: str, seed: int = 0, **settings) -> models.Classifier:
    """A new model of `family`; settings that are None are left at the family's default."""
    cls = models.family_class(family)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    settings = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise DigitlabError(f"{family} has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(fields))}")
    if "seed" in fields:
        settings["seed"] = seed
    return models.create(family, **settings)


def train_run(family: str, out: str | os.PathLike, dataset: str = "mnist", data_dir: str | None = None,
              seed: int = 0, limit: int | None = None, resume: bool = False, progress: bool = True,
              from_model: str | os.PathLike | None = None, freeze_epochs: int = 1, **settings) -> dict:
    """Trains, evaluates on the test split, saves the model folder; returns (and writes) metrics.json.

    With `from_model` the new model starts from that trained model's body (same family, any dataset)
    and is fine-tuned the fastai way: `freeze_epochs` on the fresh head, then its epochs on all layers."""
    out = Path(out)
    checkpoint = out / CHECKPOINT_DIR
    if resume:  # the checkpoint's settings win: the run continues exactly as it started
        model = _resume(checkpoint, family, dataset)
        seed, limit = model.config.seed, read_json(checkpoint / "checkpoint.json").get("limit")
    else:
        model = make_model(family, seed, **settings)
    images, labels = limit_train(*data.load(dataset, "train", data_dir), limit)
    x_test, y_test = data.load(dataset, "test", data_dir)
    if model.holdout:
        (x, y), (x_val, y_val) = holdout(images, labels, seed)
    else:
        (x, y), (x_val, y_val) = (images, labels), (images[:0], labels[:0])

    neural = hasattr(model, "callbacks")
    if neural:
        from .train import Checkpoint, ProgressBar, save_checkpoint

        extra = {"family": family, "dataset": dataset, "limit": limit}
        model.callbacks.append(Checkpoint(lambda learner: save_checkpoint(learner, checkpoint, extra)))
        if progress:
            model.callbacks.append(ProgressBar())
    t0 = time.perf_counter()
    if from_model is not None:
        _start_from(model, from_model, resume)
        model.fine_tune(x, y, model.config.epochs, freeze_epochs, x_val=x_val, y_val=y_val)
    else:
        model.fit(x, y, x_val, y_val)
    fit_wall = time.perf_counter() - t0

    model.save(out)
    config = read_json(out / "config.json")
    config.update(dataset=dataset, seed=seed, train_images=len(x), val_images=len(x_val))
    if from_model is not None:
        config.update(from_model=str(from_model), freeze_epochs=freeze_epochs)
    atomic_write_json(out / "config.json", config)

    from .evaluate import evaluate_model

    interp, speed = evaluate_model(model, x_test, y_test, data.get(dataset).classes)
    # For neural models: time inside the training loop (summed over resumed sessions), no validation.
    train_time = sum(h.get("time", 0.0) for h in model.history) if model.history else fit_wall
    epochs = len(model.history) or 1
    metrics = {
        "family": family, "dataset": dataset, "seed": seed,
        "test_accuracy": interp.accuracy, "val_accuracy": model.score(x_val, y_val) if len(x_val) else None,
        "train_accuracy_last_epoch": model.history[-1].get("train_acc") if model.history else None,
        "train_time_s": round(train_time, 2), "fit_wall_s": round(fit_wall, 2),
        "train_images_per_s": round(len(x) * epochs / train_time, 1) if train_time else None,
        "test_predict_s": round(speed["predict_seconds"], 2), "epochs": epochs, "train_images": len(x),
        "n_parameters": model.n_parameters(), **speed, **interp.to_dict(),
    }
    if getattr(model, "lr_finder", None):
        metrics["lr_finder_suggestion"] = model.lr_finder["suggestion"]
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def _start_from(model: models.Classifier, from_model: str | os.PathLike, resume: bool) -> None:
    """Loads another trained model's body into `model` (train --from)."""
    if resume:
        raise DigitlabError("--from and --resume do not go together: a fine-tuning run restarts from the body")
    if not hasattr(model, "load_body"):
        raise DigitlabError(f"{model.family} is not a neural network: --from is for mlp, cnn, fast, best, resnet34")
    model.load_body(models.load(from_model))


def _resume(checkpoint: Path, family: str, dataset: str) -> models.Classifier:
    from .train import read_checkpoint

    meta = read_checkpoint(checkpoint)
    if meta.get("family", family) != family or meta.get("dataset", dataset) != dataset:
        raise ModelError(f"{checkpoint}: holds a {meta.get('family')} run on {meta.get('dataset')}, "
                         f"not {family} on {dataset}")
    cls = models.family_class(family)
    if not hasattr(cls, "resume"):
        raise ModelError(f"{family} trains in one step; there is nothing to resume")
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    model = cls(cls.Config(**{k: v for k, v in meta["config"].items() if k in fields}))
    model.resume(checkpoint)
    if meta["epoch"] >= model.config.epochs:
        print(f"{checkpoint}: all {meta['epoch']} epochs already done; saving and evaluating", file=sys.stderr)
    return model


def find_lr(family: str, dataset: str = "mnist", data_dir: str | None = None, seed: int = 0,
            **settings) -> dict:
    """The LR finder's sweep for a neural family on the training split (minus the hold-out)."""
    import torch

    from .train import lr_find, to_tensor

    model = make_model(family, seed, **settings)
    if not hasattr(model, "net"):
        raise DigitlabError(f"{family} is not a neural network; the LR finder is for mlp, cnn, resnet34")
    (x, y), _ = holdout(*data.load(dataset, "train", data_dir), seed)
    return lr_find(model.net, to_tensor(x), torch.from_numpy(y), model.config)
