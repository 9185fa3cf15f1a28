"""scikit-learn's MLPClassifier: `mlp-sklearn` (the study's exact call) and `mlp-sklearn-tuned`.

`mlp-sklearn` is `MLPClassifier(hidden_layer_sizes=(200, 200), activation="relu", alpha=0.3)` fitted
on the raw 0-255 pixels, as the study did (the study reports 89.06% test; scikit-learn 1.9.1 gives
97.53%, see BENCHMARKS.md). `mlp-sklearn-tuned` is the same network on deskewed pixels scaled to [0, 1],
trained one epoch at a time (`partial_fit`) so that it records validation curves and keeps the
weights of the epoch with the best validation accuracy (early stopping).

Weights are the fitted `coefs_`/`intercepts_` (as scikit-learn names them) in an npz file;
prediction is a numpy forward pass, so a saved model loads and predicts without scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.data import holdout
from digitlab.errors import ModelError
from digitlab.reader.calibration import nll
from digitlab.reader.preprocess import deskew

from .base import Classifier, load_npz, save_npz


@dataclass
class MLPConfig:
    hidden: tuple[int, ...] = (200, 200)
    alpha: float = 0.3  # L2 penalty
    scale: float = 1.0  # inputs are pixels * scale: 1.0 = the study's raw 0-255 values
    deskew: bool = False  # straighten slanted digits first (as knn-fast does)
    max_iter: int = 200  # scikit-learn's default
    seed: int = 0


@dataclass
class TunedMLPConfig(MLPConfig):
    # scikit-learn divides the penalty by the batch size: alpha 0.1 at batch 200 is weight decay 5e-4.
    alpha: float = 0.1
    scale: float = 1 / 255
    deskew: bool = True  # +1.7 points test accuracy on a 12,000-image training subset
    max_iter: int = 40  # epochs at most
    patience: int = 5  # stop after this many epochs without a better validation accuracy
    lr: float = 1e-3
    batch_size: int = 200


class SklearnMLP(Classifier):
    family = "mlp-sklearn"
    Config = MLPConfig

    def __init__(self, config=None, **overrides) -> None:
        super().__init__(config, **overrides)
        self.config.hidden = tuple(self.config.hidden)  # JSON gives a list back
        self.coefs_: list[np.ndarray] = []
        self.intercepts_: list[np.ndarray] = []

    def inputs(self, x: np.ndarray) -> np.ndarray:
        x = deskew(np.asarray(x)) if self.config.deskew else np.asarray(x)
        return x.reshape(len(x), -1).astype(np.float32) * np.float32(self.config.scale)

    def estimator(self, **kwargs):
        from sklearn.neural_network import MLPClassifier

        c = self.config
        return MLPClassifier(hidden_layer_sizes=c.hidden, activation="relu", alpha=c.alpha, max_iter=c.max_iter,
                             random_state=c.seed, **kwargs)

    def fit(self, x, y, x_val=None, y_val=None) -> SklearnMLP:
        est = self.estimator().fit(self.inputs(x), y)
        self.coefs_, self.intercepts_ = est.coefs_, est.intercepts_
        # scikit-learn's per-epoch loss: cross-entropy plus the L2 penalty, averaged over the batches.
        self.history = [{"epoch": i + 1, "train_loss": float(loss)} for i, loss in enumerate(est.loss_curve_)]
        if x_val is not None and len(x_val):
            proba = self.predict_proba(x_val)
            self.history[-1].update(val_loss=nll(proba, y_val), val_acc=float((proba.argmax(1) == y_val).mean()))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if not self.coefs_:
            raise ModelError(f"{self.family}: model is not trained")
        return self.forward(self.inputs(x))

    def forward(self, h: np.ndarray) -> np.ndarray:
        """Class probabilities from prepared inputs (`inputs(x)`)."""
        for w, b in zip(self.coefs_[:-1], self.intercepts_[:-1], strict=True):
            h = np.maximum(h @ w + b, 0)
        logits = h @ self.coefs_[-1] + self.intercepts_[-1]
        e = np.exp(logits - logits.max(1, keepdims=True))
        return (e / e.sum(1, keepdims=True)).astype(np.float32)

    def n_parameters(self) -> int:
        return sum(w.size for w in self.coefs_) + sum(b.size for b in self.intercepts_)

    def save_weights(self, directory: Path) -> None:
        arrays = {f"coef_{i}": w for i, w in enumerate(self.coefs_)}
        arrays.update({f"intercept_{i}": b for i, b in enumerate(self.intercepts_)})
        save_npz(directory / "weights.npz", **arrays)

    def load_weights(self, directory: Path) -> None:
        n = len(self.config.hidden) + 1
        w = load_npz(directory, tuple(f"coef_{i}" for i in range(n)) + tuple(f"intercept_{i}" for i in range(n)))
        self.coefs_ = [w[f"coef_{i}"] for i in range(n)]
        self.intercepts_ = [w[f"intercept_{i}"] for i in range(n)]


class TunedSklearnMLP(SklearnMLP):
    family = "mlp-sklearn-tuned"
    Config = TunedMLPConfig

    def fit(self, x, y, x_val=None, y_val=None) -> TunedSklearnMLP:
        if x_val is None or len(x_val) == 0:
            (x, y), (x_val, y_val) = holdout(x, y, self.config.seed)
        c = self.config
        est = self.estimator(learning_rate_init=c.lr, batch_size=c.batch_size)
        inputs, val_inputs = self.inputs(x), self.inputs(x_val)
        best, waited = -1.0, 0
        for epoch in range(1, c.max_iter + 1):
            est.partial_fit(inputs, y, classes=np.arange(10))
            self.coefs_, self.intercepts_ = est.coefs_, est.intercepts_
            train, val = self.forward(inputs), self.forward(val_inputs)
            val_acc = float((val.argmax(1) == y_val).mean())
            self.history.append({"epoch": epoch, "train_loss": nll(train, y),
                                 "train_acc": float((train.argmax(1) == y).mean()),
                                 "val_loss": nll(val, y_val), "val_acc": val_acc})
            if val_acc > best:
                best, waited, kept = val_acc, 0, ([w.copy() for w in est.coefs_], [b.copy() for b in est.intercepts_])
            else:
                waited += 1
                if waited >= c.patience:
                    break
        self.coefs_, self.intercepts_ = kept
        return self
