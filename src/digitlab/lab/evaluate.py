"""What a trained model gets right and wrong: metrics from (probabilities, labels), numpy only.

`interpret(proba, labels, classes)` returns an `Interpretation` (fastai's ClassificationInterpretation
in spirit): accuracy, macro-F1, the classification report per class, the confusion matrix, the top
losses and the most-confused pairs. `overfitting(history)` reads the training curves;
`evaluate_model` also times the prediction (throughput); `evaluate_directory` does it all for a
saved model on a dataset's test split.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from digitlab.reader.calibration import FLOOR, log_losses


@dataclass
class Interpretation:
    classes: list[str]
    n: int
    n_incorrect: int
    accuracy: float
    macro_f1: float
    confusion_matrix: list[list[int]]  # [true][predicted]
    per_class: list[dict]  # class, precision, recall, f1, support
    top_losses: list[dict]  # index, true, predicted, probability (of the prediction), true_probability, loss
    most_confused: list[dict]  # true, predicted, count
    no_true_vote: int = 0  # mistakes that gave the true label no probability at all (k-NN: no neighbour's vote)

    def to_dict(self) -> dict:
        return asdict(self)


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    return np.bincount(labels * n_classes + predicted, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def interpret(proba: np.ndarray, labels: np.ndarray, classes: list[str] | tuple[str, ...], top_k: int = 16,
              n_confused: int = 10) -> Interpretation:
    proba, labels = np.asarray(proba, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if proba.ndim != 2 or proba.shape != (len(labels), len(classes)):
        raise ValueError(f"probabilities of shape {proba.shape} do not fit {len(labels)} labels "
                         f"and {len(classes)} classes")
    predicted = proba.argmax(1)
    cm = confusion_matrix(labels, predicted, len(classes))
    tp, support, n_predicted = np.diag(cm), cm.sum(1), cm.sum(0)
    # An empty denominator gives 0, as scikit-learn's classification_report does.
    precision = np.divide(tp, n_predicted, out=np.zeros(len(cm)), where=n_predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(len(cm)), where=support > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(cm)),
                   where=precision + recall > 0)
    per_class = [{"class": str(c), "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=True)]

    losses = log_losses(proba, labels)
    confidence = proba[np.arange(len(labels)), predicted]
    # Highest loss first; among equal losses (k-NN gives many p=0), the most confident mistake; then by index.
    worst = np.lexsort((np.arange(len(losses)), -confidence, -losses))[:top_k]
    true_p = proba[np.arange(len(labels)), labels]
    top_losses = [{"index": int(i), "true": int(labels[i]), "predicted": int(predicted[i]),
                   "probability": float(confidence[i]), "true_probability": float(true_p[i]),
                   "loss": float(losses[i])} for i in worst]

    off = cm.copy()
    np.fill_diagonal(off, 0)
    pairs = np.argwhere(off > 0)
    pairs = sorted(pairs.tolist(), key=lambda p: (-off[p[0], p[1]], p[0], p[1]))[:n_confused]
    most_confused = [{"true": t, "predicted": p, "count": int(off[t, p])} for t, p in pairs]

    return Interpretation(classes=[str(c) for c in classes], n=len(labels), n_incorrect=int(len(labels) - tp.sum()),
                          accuracy=float(tp.sum() / max(len(labels), 1)), macro_f1=float(f1.mean()),
                          confusion_matrix=cm.tolist(), per_class=per_class, top_losses=top_losses,
                          most_confused=most_confused, no_true_vote=int((true_p <= FLOOR).sum()))


def evaluate_model(model, images: np.ndarray, labels: np.ndarray,
                   classes: list[str] | tuple[str, ...]) -> tuple[Interpretation, dict]:
    """Interpretation of `model` on (images, labels), and the throughput of its prediction.

    Predicts in chunks of 2,000 images, so that a slow model (k-NN, ResNet-34 on an AVX2 CPU) shows
    its progress on stderr; every family already batches internally, so the figures stay the same."""
    from digitlab.progress import Progress

    start = time.perf_counter()
    chunks, bar = [], Progress(f"predicting {len(images):,} images", total=len(images))
    for i in range(0, len(images), 2000):
        chunks.append(class_proba(model, images[i:i + 2000], len(classes)))
        bar.update(min(i + 2000, len(images)))
    bar.close()
    proba = np.concatenate(chunks) if chunks else class_proba(model, images, len(classes))
    seconds = time.perf_counter() - start
    speed = {"predict_seconds": seconds, "images_per_second": len(images) / seconds if seconds > 0 else float("inf")}
    return interpret(proba, labels, classes), speed


def class_proba(model, images: np.ndarray, n_classes: int) -> np.ndarray:
    """The model's probabilities with one column per class of the dataset: a classical model has
    columns for the labels it saw in fit only (`classes_`, as in scikit-learn), e.g. after --limit."""
    proba = model.predict_proba(images)
    classes = getattr(model, "classes_", None)
    if classes is None or proba.shape[1] == n_classes:
        return proba
    full = np.zeros((len(proba), n_classes), np.float32)
    full[:, np.asarray(classes, dtype=np.int64)] = proba
    return full


def overfitting(history: list[dict], tolerance: float = 0.02) -> dict:
    """Is validation loss rising while training loss falls? From which epoch?

    Overfitting is declared when the last validation loss is more than `tolerance` (relative) above
    its minimum and training loss went down after that minimum; it starts the epoch after the minimum.
    """
    rows = [h for h in history if "val_loss" in h and "train_loss" in h and "epoch" in h]
    if len(rows) < 2:
        if not history:
            why = "fitted in one step, without epochs: there are no training curves to judge overfitting from"
        elif not rows:
            why = "no validation loss was recorded (trained without a hold-out): overfitting cannot be judged"
        else:
            why = "validation loss was recorded at one epoch only: two or more are needed to judge overfitting"
        return {"overfitting": None, "from_epoch": None, "best_epoch": None, "verdict": why}
    val = np.array([h["val_loss"] for h in rows])
    train = np.array([h["train_loss"] for h in rows])
    best = int(np.argmin(val))
    best_epoch = rows[best]["epoch"]
    rising = val[-1] > val[best] * (1 + tolerance) and train[-1] < train[best]
    if rising:
        start = rows[best + 1]["epoch"]
        verdict = (f"overfitting from epoch {start}: validation loss rose from {val[best]:.4f} (epoch {best_epoch}) "
                   f"to {val[-1]:.4f} while training loss fell from {train[best]:.4f} to {train[-1]:.4f}")
        return {"overfitting": True, "from_epoch": start, "best_epoch": best_epoch, "verdict": verdict}
    verdict = (f"no overfitting: validation loss {val[-1]:.4f} at the last epoch, lowest {val[best]:.4f} "
               f"at epoch {best_epoch}")
    return {"overfitting": False, "from_epoch": None, "best_epoch": best_epoch, "verdict": verdict}


@dataclass
class ModelResult:
    directory: Path
    family: str
    dataset: str
    interp: Interpretation
    speed: dict
    history: list[dict]
    n_parameters: int
    images: np.ndarray  # the test images, for the top-loss grid


def evaluate_directory(directory: str | os.PathLike, dataset: str | None = None,
                       data_dir: str | None = None) -> ModelResult:
    """Loads a model and evaluates it on the test split of `dataset`.

    `directory` is a model directory or an exported `.onnx` file. Without `dataset`, the one recorded
    in the directory's metrics.json is used, else MNIST.
    """
    from digitlab.data import get, load
    from digitlab.files import read_json

    directory = Path(directory)
    model, family, history, n_parameters = _load_any(directory)
    metrics_path = directory / "metrics.json"
    if dataset is None:
        dataset = read_json(metrics_path).get("dataset", "mnist") if metrics_path.is_file() else "mnist"
    images, labels = load(dataset, "test", data_dir)
    interp, speed = evaluate_model(model, images, labels, get(dataset).classes)
    return ModelResult(directory, family, dataset, interp, speed, history, n_parameters, images)


def _load_any(target: Path) -> tuple[object, str, list[dict], int]:
    """(model, family, history, parameter count) of a model directory or an .onnx file."""
    if target.suffix == ".onnx":
        from digitlab.reader.infer import OnnxModel

        model = OnnxModel(target)
        return model, model.card.get("family", "onnx"), [], int(model.card.get("n_parameters", 0))
    from . import models

    model = models.load(target)
    return model, model.family, model.history, model.n_parameters()


# ---------------------------------------------------------------------------- text
def classification_report(interp: Interpretation) -> str:
    width = max(12, *(len(c) for c in interp.classes))
    lines = [f"{'':>{width}} {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"]
    for row in interp.per_class:
        lines.append(f"{row['class']:>{width}} {row['precision']:>9.4f} {row['recall']:>9.4f} "
                     f"{row['f1']:>9.4f} {row['support']:>9}")
    lines.append(f"{'accuracy':>{width}} {'':>9} {'':>9} {interp.accuracy:>9.4f} {interp.n:>9}")
    lines.append(f"{'macro avg F1':>{width}} {'':>9} {'':>9} {interp.macro_f1:>9.4f} {interp.n:>9}")
    return "\n".join(lines)


def confusion_text(interp: Interpretation) -> str:
    cm = interp.confusion_matrix
    width = max(6, len(str(max(max(r) for r in cm))) + 1)
    header = "true\\pred " + "".join(f"{i:>{width}}" for i in range(len(cm)))
    rows = [f"{i:>9} " + "".join(f"{v:>{width}}" for v in row) for i, row in enumerate(cm)]
    return "\n".join([header, *rows])


def loss_text(t: dict) -> str:
    """A top loss's loss: -log p(true), or "inf" where p(true) is 0 (the stored figure is -log of the
    floor it was clipped to, 69.08, which is no measurement)."""
    return "inf" if t.get("true_probability", 1.0) <= FLOOR else f"{t['loss']:.4f}"


def no_true_vote_text(interp: Interpretation) -> str:
    return (f"{interp.no_true_vote} mistakes gave the true label no probability at all (a k-NN does when no "
            f"neighbour has it): their loss is infinite, so the ones shown are the most confident of them")


def summary_text(interp: Interpretation) -> str:
    names = interp.classes
    lines = [classification_report(interp), "", "confusion matrix (rows: true, columns: predicted)",
             confusion_text(interp), "", f"incorrect: {interp.n_incorrect} of {interp.n}", "",
             "top losses:  index  true -> predicted  p(predicted)  p(true)  loss"]
    for t in interp.top_losses:
        lines.append(f"{t['index']:>18}  {names[t['true']]} -> {names[t['predicted']]}  "
                     f"{t['probability']:.4f}  {t['true_probability']:.4f}  {loss_text(t)}")
    if interp.no_true_vote > len(interp.top_losses):
        lines.append(no_true_vote_text(interp))
    lines += ["", "most confused:  true -> predicted  count"]
    lines += [f"{'':>16}{names[c['true']]} -> {names[c['predicted']]}  {c['count']}" for c in interp.most_confused]
    return "\n".join(lines)
