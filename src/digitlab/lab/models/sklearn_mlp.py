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
from sklearn.utils.validation import validate_data

from digitlab.data import holdout
from digitlab.reader.calibration import nll, softmax
from digitlab.reader.preprocess import deskew

from .base import ClassicalClassifier, as_images, load_npz, save_npz


@dataclass
class SklearnMLPConfig:
    hidden: tuple[int, ...] = (200, 200)
    alpha: float = 0.3  # L2 penalty
    scale: float = 1.0  # inputs are pixels * scale: 1.0 = the study's raw 0-255 values
    deskew: bool = False  # straighten slanted 28x28 digits first (as knn-fast does)
    max_iter: int = 200  # scikit-learn's default
    seed: int = 0


@dataclass
class TunedSklearnMLPConfig(SklearnMLPConfig):
    # scikit-learn divides the penalty by the batch size: alpha 0.1 at batch 200 is weight decay 5e-4.
    alpha: float = 0.1
    scale: float = 1 / 255
    deskew: bool = True  # +1.7 points test accuracy on a 12,000-image training subset
    max_iter: int = 40  # epochs at most
    patience: int = 5  # stop after this many epochs without a better validation accuracy
    lr: float = 1e-3
    batch_size: int = 200


class SklearnMLP(ClassicalClassifier):
    family = "mlp-sklearn"
    Config = SklearnMLPConfig

    def __init__(self, hidden: tuple[int, ...] = (200, 200), alpha: float = 0.3, scale: float = 1.0,
                 deskew: bool = False, max_iter: int = 200, seed: int = 0) -> None:
        self.hidden = hidden
        self.alpha = alpha
        self.scale = scale
        self.deskew = deskew
        self.max_iter = max_iter
        self.seed = seed

    def inputs(self, X: np.ndarray) -> np.ndarray:
        """Validated inputs as the network's float32 [N, n_features]: deskewed first when `deskew`."""
        X = deskew(as_images(X)).reshape(len(X), -1) if self.deskew else X
        return X.astype(np.float32) * np.float32(self.scale)

    def estimator(self, **kwargs):
        from sklearn.neural_network import MLPClassifier

        # tuple(): a model loaded from config.json has a list, and MLPClassifier's own check wants a sequence
        return MLPClassifier(hidden_layer_sizes=tuple(self.hidden), activation="relu", alpha=self.alpha,
                             max_iter=self.max_iter, random_state=self.seed, **kwargs)

    def fit(self, X, y, x_val=None, y_val=None) -> SklearnMLP:
        """The study's call on (X, y); with a validation split, its loss and accuracy join the last epoch."""
        X, y = self._validate(X, y)
        est = self.estimator().fit(self.inputs(X), y)
        self._keep(est.coefs_, est.intercepts_)
        self.n_iter_ = est.n_iter_
        # scikit-learn's per-epoch loss: cross-entropy plus the L2 penalty, averaged over the batches.
        self.history_ = [{"epoch": i + 1, "train_loss": float(loss)} for i, loss in enumerate(est.loss_curve_)]
        if x_val is not None and len(x_val):
            proba, labels = self.predict_proba(x_val), self._labels(y_val)
            self.history_[-1].update(val_loss=nll(proba, labels.clip(min=0)),
                                     val_acc=float((proba.argmax(1) == labels).mean()))
        return self

    def _keep(self, coefs: list[np.ndarray], intercepts: list[np.ndarray]) -> None:
        # copies: MLPClassifier.partial_fit updates its arrays in place
        self.coefs_, self.intercepts_ = [w.copy() for w in coefs], [b.copy() for b in intercepts]

    def predict_proba(self, X) -> np.ndarray:
        X, _ = self._validate(X, reset=False)
        return self.forward(self.inputs(X))

    def forward(self, h: np.ndarray) -> np.ndarray:
        """Class probabilities from prepared inputs (`inputs(X)`)."""
        if len(self.classes_) == 1:  # fitted on one label: scikit-learn predicts it, with certainty
            return np.ones((len(h), 1), np.float32)
        for w, b in zip(self.coefs_[:-1], self.intercepts_[:-1], strict=True):
            h = np.maximum(h @ w + b, 0)
        logits = h @ self.coefs_[-1] + self.intercepts_[-1]
        if logits.shape[1] == 1:  # two classes: scikit-learn's one logistic output, p(classes_[1])
            p = 1 / (1 + np.exp(-logits.astype(np.float64)))
            return np.hstack([1 - p, p]).astype(np.float32)
        return softmax(logits).astype(np.float32)

    def n_parameters(self) -> int:
        return sum(w.size for w in self.coefs_) + sum(b.size for b in self.intercepts_)

    def save_weights(self, directory: Path) -> None:
        arrays = {f"coef_{i}": w for i, w in enumerate(self.coefs_)}
        arrays.update({f"intercept_{i}": b for i, b in enumerate(self.intercepts_)})
        save_npz(directory / "weights.npz", classes=self.classes_, **arrays)

    def load_weights(self, directory: Path) -> None:
        n = len(self.hidden) + 1
        w = load_npz(directory, tuple(f"coef_{i}" for i in range(n)) + tuple(f"intercept_{i}" for i in range(n)),
                     optional=("classes",))
        self.coefs_ = [w[f"coef_{i}"] for i in range(n)]
        self.intercepts_ = [w[f"intercept_{i}"] for i in range(n)]
        # written since 0.2.0; before, the classes were the digits, one per output
        self.classes_ = w.get("classes", np.arange(self.coefs_[-1].shape[1]))
        self.n_features_in_ = self.coefs_[0].shape[0]


class TunedSklearnMLP(SklearnMLP):
    family = "mlp-sklearn-tuned"
    Config = TunedSklearnMLPConfig

    def __init__(self, hidden: tuple[int, ...] = (200, 200), alpha: float = 0.1, scale: float = 1 / 255,
                 deskew: bool = True, max_iter: int = 40, seed: int = 0, patience: int = 5, lr: float = 1e-3,
                 batch_size: int = 200) -> None:
        super().__init__(hidden=hidden, alpha=alpha, scale=scale, deskew=deskew, max_iter=max_iter, seed=seed)
        self.patience = patience
        self.lr = lr
        self.batch_size = batch_size

    def fit(self, X, y, x_val=None, y_val=None) -> TunedSklearnMLP:
        """One epoch at a time on (X, y), keeping the weights of the epoch with the best accuracy on
        (x_val, y_val) -- a seeded hold-out of X when none is given -- and stopping after `patience`
        epochs without a better one."""
        X, y = self._validate(X, y)
        if x_val is None or len(x_val) == 0:
            (X, y), (x_val, y_val) = holdout(X, y, self.seed)
            if len(x_val) == 0:
                raise ValueError(f"{self.family} holds out a tenth of the samples to pick its epoch: "
                                 f"needs 10 or more, got n_samples = {len(X)}")
        else:
            x_val, y_val = validate_data(self, x_val.reshape(len(x_val), -1), reset=False), self._labels(y_val)
        est = self.estimator(learning_rate_init=self.lr, batch_size=self.batch_size)
        inputs, val_inputs = self.inputs(X), self.inputs(x_val)
        best, waited, history = -1.0, 0, []
        for epoch in range(1, self.max_iter + 1):
            est.partial_fit(inputs, y, classes=np.arange(len(self.classes_)))
            self._keep(est.coefs_, est.intercepts_)
            train, val = self.forward(inputs), self.forward(val_inputs)
            val_acc = float((val.argmax(1) == y_val).mean())
            history.append({"epoch": epoch, "train_loss": nll(train, y),
                            "train_acc": float((train.argmax(1) == y).mean()),
                            "val_loss": nll(val, y_val.clip(min=0)), "val_acc": val_acc})
            if val_acc > best:
                best, waited, kept = val_acc, 0, (self.coefs_, self.intercepts_)
            else:
                waited += 1
                if waited >= self.patience:
                    break
        self.coefs_, self.intercepts_ = kept
        self.history_, self.n_iter_ = history, len(history)
        return self
