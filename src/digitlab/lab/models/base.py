"""The one contract every digitlab model follows, classical or neural: a scikit-learn classifier.

Every model is a `sklearn.base.BaseEstimator` with `ClassifierMixin`: `fit(X, y)` returns the model,
`predict`, `predict_proba` and `score` follow scikit-learn, and what `fit` learns lives in attributes
ending in "_" (e.g. knn-fast's chosen `k_`). X is images, uint8 [N, 28, 28] (0-255, ink bright, as in
MNIST) or the same pixels flattened to [N, 784]; the model scales them itself.

The classical families (`ClassicalClassifier`: knn, knn-fast, mlp-sklearn, mlp-sklearn-tuned) take
their settings as keyword arguments of `__init__`, so `clone`, `GridSearchCV` and `Pipeline` work
on them as on any scikit-learn estimator; their `config` is a read-only view of those settings. A
neural family takes one `config` dataclass (its many training settings) and `device`.

A trained model is a directory:

    config.json    the settings (family, config) and the run that made it (dataset, split, seed, command)
    weights.*      safetensors (PyTorch) or npz (the rest); never a pickle
    history.json   per-epoch train/validation loss and accuracy (empty for one-shot models)
    metrics.json   test-set figures written by `digitlab train` / `evaluate`
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from digitlab.errors import ModelError
from digitlab.files import atomic_write_bytes, atomic_write_json, read_json


class Classifier(ClassifierMixin, BaseEstimator):
    family: ClassVar[str]  # registry name, e.g. "knn", "cnn"
    Config: ClassVar[type]  # a dataclass of hyper-parameters, seed included: the schema of config.json
    # Whether `digitlab train` holds out a validation split for it (curves, early stopping). Nearest
    # neighbours memorise the training set: a hold-out only takes 5,000 images away from them.
    holdout: ClassVar[bool] = True
    # Whether fit runs an epoch loop (train.Learner) that takes callbacks and can resume from a checkpoint.
    trains_in_epochs: ClassVar[bool] = False
    # The pixel normalization the model's network was trained with, when it has one (ONNX export records it).
    normalization: ClassVar[dict | None] = None

    def __init__(self, config: Any = None, **overrides: Any) -> None:
        config = config if config is not None else self.Config()
        self.config = dataclasses.replace(config, **overrides) if overrides else config

    @classmethod
    def from_config(cls, config: Any) -> Classifier:
        """A new model with these settings (a `Config`)."""
        return cls(config)

    # -- to implement -------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> Classifier:
        raise NotImplementedError

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 [N, n_classes], columns in the order of `classes_`."""
        raise NotImplementedError

    def save_weights(self, directory: Path) -> None:
        raise NotImplementedError

    def load_weights(self, directory: Path) -> None:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    @property
    def history(self) -> list[dict]:
        """Per-epoch curves of the last fit (`history_`); empty before fitting and for one-shot models."""
        return getattr(self, "history_", [])

    def predict(self, X: np.ndarray) -> np.ndarray:
        proba = self.predict_proba(X)  # first: it raises NotFittedError before `classes_` exists
        index = proba.argmax(axis=1)
        # a family that names no classes_ has one column per digit, as every dataset digitlab reads
        return self.classes_[index] if hasattr(self, "classes_") else index

    def n_parameters(self) -> int:
        return 0

    def save(self, directory: str | os.PathLike, run: dict | None = None) -> Path:
        """Writes the model folder; `run` (dataset, split, seed, command...) goes into config.json beside
        the settings, so that the one file says how the model was made."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.save_weights(directory)
        atomic_write_json(directory / "config.json",
                          {"family": self.family, "config": dataclasses.asdict(self.config), **(run or {})})
        atomic_write_json(directory / "history.json", self.history)
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Classifier:
        directory = Path(directory)
        model = cls.from_config(config_from(cls.Config, read_model_config(directory)["config"]))
        model.load_weights(directory)
        if (directory / "history.json").exists():
            model.history_ = read_json(directory / "history.json")
        return model


class ClassicalClassifier(Classifier):
    """A model whose settings are keyword arguments of `__init__`, stored as given (scikit-learn's
    rule: validation happens in `fit`), one per field of its `Config`."""

    def __init__(self) -> None:  # each family spells out its settings; this one has none
        pass

    @classmethod
    def from_config(cls, config: Any) -> ClassicalClassifier:
        return cls(**dataclasses.asdict(config))

    @property
    def config(self) -> Any:
        """The settings as the family's Config (what config.json records); read-only: use set_params."""
        return self.Config(**{name: getattr(self, name) for name in setting_names(self.Config)})

    def _validate(self, X: Any, y: Any = None, reset: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """X as [N, n_features] (images [N, 28, 28] are flattened), checked the scikit-learn way; on
        `reset` (fit) it records n_features_in_ and the classes, and y comes back as indices into
        `classes_`."""
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import check_is_fitted, validate_data

        if getattr(X, "ndim", 2) == 3:
            X = X.reshape(len(X), -1)
        if not reset:
            check_is_fitted(self)
            return validate_data(self, X, reset=False), None
        X, y = validate_data(self, X, y)
        check_classification_targets(y)
        self.classes_, y = np.unique(y, return_inverse=True)
        return X, y

    def _labels(self, y: Any) -> np.ndarray:
        """Labels (e.g. a validation split's) as indices into `classes_`; a label never seen in fit is -1."""
        y = np.asarray(y)
        index = np.searchsorted(self.classes_, y).clip(max=len(self.classes_) - 1)
        return np.where(self.classes_[index] == y, index, -1)


def as_images(X: np.ndarray, side: int = 28) -> np.ndarray:
    """[N, 784] or [N, 28, 28] -> [N, 28, 28]; anything else is a ValueError that says what was expected."""
    X = np.asarray(X)
    if X.ndim == 2 and X.shape[1] == side * side:
        return X.reshape(len(X), side, side)
    if X.ndim == 3 and X.shape[1:] == (side, side):
        return X
    raise ValueError(f"expected images of {side}x{side} pixels, [N, {side}, {side}] or [N, {side * side}]; "
                     f"got an array of shape {X.shape}")


def setting_names(config_class: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_class)}


def config_from(config_class: type, settings: dict) -> Any:
    """A Config from saved settings. Fields it no longer has (older digitlab's `val_size`, `threads`,
    `device`) are dropped, so a model saved then still loads."""
    fields = setting_names(config_class)
    return config_class(**{k: v for k, v in settings.items() if k in fields})


def read_model_config(directory: Path) -> dict:
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise ModelError(f"{directory}: not a model directory (no config.json)")
    try:
        config = read_json(path)
        config["family"], config["config"]
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{path}: not a digitlab model config") from None
    return config


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Writes arrays as one npz file, atomically (the weights format of the non-PyTorch models)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(directory: Path, names: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """The named arrays of `directory/weights.npz` (and those of `optional` that it holds: arrays that
    older digitlab did not write), or a ModelError saying what is wrong."""
    path = directory / "weights.npz"
    if not path.is_file():
        raise ModelError(f"{directory}: weights.npz missing")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in (*names, *(o for o in optional if o in npz.files))}
    except (KeyError, ValueError, OSError) as e:
        raise ModelError(f"{path}: not a valid weights file ({e})") from None
