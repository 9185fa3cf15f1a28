"""One training run of any model family: data, seeded hold-out, fit, checkpoints, saved model, metrics.

    model, metrics = train_run("cnn", "runs/cnn", epochs=3)   # `digitlab train cnn --out runs/cnn --epochs 3`

This is the one way digitlab trains a model: `digitlab train`, `digitlab benchmark` and the bundled
model's rebuild command all come here. Neural families get a live progress bar and a checkpoint
after every epoch (`<out>/checkpoint/`), from which `resume=True` continues at the next epoch. Every
family follows the Classifier contract, so classical models go through the same code (fit, score,
save) without importing torch. The run writes `config.json` (settings and how the model was made)
and `metrics.json` (its figures), each once.
"""

from __future__ import annotations

import ast
import contextlib
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from digitlab import data
from digitlab.errors import DigitlabError, ModelError
from digitlab.files import atomic_write_json

from . import distributed, models
from .models.base import config_from, setting_names

CHECKPOINT_DIR = "checkpoint"


def parse_setting(text: str) -> tuple[str, object]:
    """"key=value" -> (key, value): a Python literal (3, 0.1, True, (24, 48, 96), 24,48,96) or a string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise DigitlabError(f"--set {text!r}: write KEY=VALUE, e.g. --set epochs=30")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a plain word, e.g. optimizer=sgd


def limit_train(images: np.ndarray, labels: np.ndarray, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` training images (a quick smoke run), or all of them."""
    if limit is None:
        return images, labels
    if limit < 20:
        raise DigitlabError(f"--limit {limit}: need at least 20 training images")
    return images[:limit], labels[:limit]


def make_model(family: str, seed: int = 0, device: str | None = None, **settings) -> models.Classifier:
    """A new model of `family`; settings that are None are left at the family's default."""
    cls = models.family_class(family)
    fields = setting_names(cls.Config)
    settings = {k: v for k, v in settings.items() if v is not None}
    unknown = sorted(set(settings) - fields)
    if unknown:
        raise DigitlabError(f"{family} has no setting {', '.join(unknown)}; its settings: {', '.join(sorted(fields))}")
    if "seed" in fields:
        settings["seed"] = seed
    if device not in (None, "cpu"):
        if not cls.trains_in_epochs:
            raise DigitlabError(f"{family} runs on the CPU only; --device {device} is for neural families")
        settings["device"] = device
    return cls(**settings)


def train_run(family: str, out: str | os.PathLike, dataset: str = "mnist", data_dir: str | None = None,
              seed: int = 0, limit: int | None = None, holdout: bool = True, resume: bool = False,
              progress: bool = True, device: str | None = None, command: str | None = None,
              from_model: str | os.PathLike | None = None, freeze_epochs: int = 1,
              **settings) -> tuple[models.Classifier, dict]:
    """Trains, evaluates on the test split, saves the model folder; returns (model, metrics).

    With `from_model` the new model starts from that trained model's body (same family, any dataset)
    and is fine-tuned the fastai way: `freeze_epochs` on the fresh head, then its epochs on all layers.

    `holdout=False` trains on the whole training split (a final model; no validation curves).
    `command` is the command line that ran this, recorded in config.json (and so in an exported card)."""
    out = Path(out)
    checkpoint = out / CHECKPOINT_DIR
    rank, world = distributed.world()  # (0, 1) unless this is a rank of a DDP run (lab/distributed.py)
    main = rank == 0  # only rank 0 writes, prints progress, evaluates
    if world > 1 and not models.family_class(family).trains_in_epochs:
        raise DigitlabError(f"{family} trains in one step: --nproc is for neural families")
    if resume:  # the checkpoint's settings win: the run continues as it started (--epochs may extend it)
        model, meta = _resume(checkpoint, family, dataset, device, settings)
        seed, limit, holdout = model.config.seed, meta.get("limit"), meta.get("holdout", True)
        command = meta.get("command", command)
    else:
        model = make_model(family, seed, device, **settings)
    if hasattr(model, "progress"):
        model.progress = progress  # the LR finder's line, when lr = 0
    images, labels = limit_train(*data.load(dataset, "train", data_dir), limit)
    x_test, y_test = data.load(dataset, "test", data_dir)
    if model.holdout and holdout:
        (x, y), (x_val, y_val) = data.holdout(images, labels, seed)
    else:
        (x, y), (x_val, y_val) = (images, labels), (images[:0], labels[:0])

    run = {"dataset": dataset, "seed": seed, "split": {"train_images": len(x), "val_images": len(x_val),
                                                        "limit": limit}}
    if model.normalization:
        run["normalization"] = model.normalization
    if model.trains_in_epochs:
        run["world_size"] = world
    if getattr(model.config, "realistic_views", 0):  # it trained on what the reader's pipeline made
        from digitlab.reader.pipeline import PIPELINE_VERSION

        run["pipeline_version"] = PIPELINE_VERSION
    if command:
        run["command"] = command
    if from_model is not None:
        run.update(from_model=str(from_model), freeze_epochs=freeze_epochs)
    t0 = time.perf_counter()
    if model.trains_in_epochs:
        from .callbacks import Checkpoint, ProgressBar
        from .checkpoint import save_checkpoint

        extra = {"family": family, "dataset": dataset, "limit": limit, "holdout": holdout, "command": command,
                 "world_size": world}
        callbacks = [Checkpoint(lambda learner: save_checkpoint(learner, checkpoint, extra))] if main else []
        callbacks += [ProgressBar()] if progress and main else []
        if from_model is not None:
            _start_from(model, from_model, resume)
            model.fine_tune(x, y, model.config.epochs, freeze_epochs, x_val=x_val, y_val=y_val, callbacks=callbacks)
        else:
            model.fit(x, y, x_val, y_val, callbacks=callbacks)
    elif from_model is not None:
        raise DigitlabError(f"{family} is not a neural network: --from is for mlp, cnn, fast, best, resnet34")
    else:
        with convergence_notes(notes := []):
            model.fit(x, y, x_val, y_val)
        for note in notes:  # one line each, not scikit-learn's warning with its source line
            print(f"{family}: {note}", file=sys.stderr)
        if notes:
            run["notes"] = notes
    fit_wall = time.perf_counter() - t0
    if not main:  # the other ranks trained the same weights; rank 0 saves and evaluates them
        return model, {}
    model.save(out, run)
    metrics = run_metrics(model, family, dataset, seed, (x, x_val, y_val), (x_test, y_test), fit_wall)
    atomic_write_json(out / "metrics.json", metrics)
    return model, metrics


@contextlib.contextmanager
def convergence_notes(notes: list[str]):
    """scikit-learn's ConvergenceWarning (an MLP stopped at max_iter) as a note in `notes`, for the
    run's config.json and one line on stderr; any other warning is shown as it would have been."""
    from sklearn.exceptions import ConvergenceWarning  # the classical families' (they need scikit-learn)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            notes.append(f"did not converge ({w.message}); --set max_iter=N trains longer")
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def run_metrics(model: models.Classifier, family: str, dataset: str, seed: int, train: tuple, test: tuple,
                fit_wall: float) -> dict:
    """metrics.json: the one schema of a trained model's figures (`evaluate` refreshes its test part)."""
    from .evaluate import evaluate_model

    x, x_val, y_val = train
    interp, speed = evaluate_model(model, *test, data.get(dataset).classes)
    # For neural models: time inside the training loop (summed over resumed sessions), no validation.
    # scikit-learn's MLPs record epochs without their times: the fit's wall time is theirs.
    timed = [h["time"] for h in model.history if "time" in h]
    train_time = sum(timed) if timed else fit_wall
    epochs = len(model.history) or 1
    metrics = {
        "family": family, "dataset": dataset, "seed": seed,
        "test_accuracy": interp.accuracy, "val_accuracy": val_accuracy(model, x_val, y_val),
        "train_accuracy_last_epoch": model.history[-1].get("train_acc") if model.history else None,
        "train_time_s": round(train_time, 2), "fit_wall_s": round(fit_wall, 2),
        "train_images_per_s": round(len(x) * epochs / train_time, 1) if train_time else None,
        "test_predict_s": round(speed["predict_seconds"], 2), "epochs": epochs, "train_images": len(x),
        "val_images": len(x_val), "n_parameters": model.n_parameters(), **speed, **interp.to_dict(),
    }
    if getattr(model, "lr_finder_", None):
        metrics["lr_finder_suggestion"] = model.lr_finder_["suggestion"]
    return metrics


def val_accuracy(model: models.Classifier, x_val: np.ndarray, y_val: np.ndarray) -> float | None:
    """Accuracy on the validation split: the last epoch's, which the training loop measured on the
    weights the model ends with; computed here only for models whose history does not hold it
    (one-shot models, and mlp-sklearn-tuned, which keeps its best epoch rather than its last)."""
    if not len(x_val):
        return None
    if model.trains_in_epochs and model.history and "val_acc" in model.history[-1]:
        return model.history[-1]["val_acc"]
    return model.score(x_val, y_val)


def _start_from(model: models.Classifier, from_model: str | os.PathLike, resume: bool) -> None:
    """Loads another trained model's body into `model` (train --from)."""
    if resume:
        raise DigitlabError("--from and --resume do not go together: a fine-tuning run restarts from the body")
    model.load_body(models.load(from_model))


def _resume(checkpoint: Path, family: str, dataset: str, device: str | None,
            settings: dict | None = None) -> tuple[models.Classifier, dict]:
    cls = models.family_class(family)
    if not cls.trains_in_epochs:
        raise ModelError(f"{checkpoint}: no checkpoint to resume: {family} trains in one step")
    from .checkpoint import read_checkpoint

    meta = read_checkpoint(checkpoint)
    if meta.get("family", family) != family or meta.get("dataset", dataset) != dataset:
        raise ModelError(f"{checkpoint}: holds a {meta.get('family')} run on {meta.get('dataset')}, "
                         f"not {family} on {dataset}")
    if meta.get("world_size", 1) != distributed.world()[1]:  # its steps per epoch depend on it
        w = meta.get("world_size", 1)
        raise ModelError(f"{checkpoint}: the run trained on {w} process{'es' if w > 1 else ''}; "
                         f"resume it with --nproc {w}")
    model = cls(config_from(cls.Config, meta["config"]), device=device or "cpu")
    model.resume(checkpoint, meta)
    if model.config.precision != meta["config"].get("precision", model.config.precision):
        print(f"{checkpoint}: the run trained in {meta['config']['precision']}, which this CPU would emulate; "
              f"resuming in {model.config.precision}", file=sys.stderr)
    settings = {k: v for k, v in (settings or {}).items() if v is not None}
    if "epochs" in settings:
        change = model.extend(settings.pop("epochs"))
        if change:
            print(f"{checkpoint}: {change}", file=sys.stderr)
    if settings:  # changing them mid-run would make it a different run, not this one resumed
        print(f"{checkpoint}: resuming with the checkpoint's settings; ignoring "
              + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())), file=sys.stderr)
    if meta["epoch"] >= model.config.epochs:
        print(f"{checkpoint}: all {meta['epoch']} epochs already done; saving and evaluating", file=sys.stderr)
    else:
        print(f"{checkpoint}: resuming at epoch {meta['epoch'] + 1} of {model.config.epochs}", file=sys.stderr)
    return model, meta


def find_lr(family: str, dataset: str = "mnist", data_dir: str | None = None, seed: int = 0,
            device: str | None = None, progress: bool = True, **settings) -> dict:
    """The LR finder's sweep for a neural family on the training split (minus the hold-out)."""
    import torch

    from .loop import to_tensor
    from .lr_finder import lr_find

    model = make_model(family, seed, device, **settings)
    if not model.trains_in_epochs:
        raise DigitlabError(f"{family} is not a neural network; the LR finder is for mlp, cnn, resnet34")
    (x, y), _ = data.holdout(*data.load(dataset, "train", data_dir), seed)
    return lr_find(model.net, to_tensor(x), torch.from_numpy(y), model.config, device=model.device,
                   progress=progress)
