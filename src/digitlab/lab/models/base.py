"""The one small contract every digitlab model follows, classical or neural (scikit-learn style).

A model takes images as uint8 arrays [N, 28, 28] (0-255, ink bright, as in MNIST) and labels as
int64 [N]; it scales the pixels itself. As in scikit-learn, its settings are given to `__init__`
(a `Config` dataclass, or keyword overrides of the defaults), `fit` returns the model itself, and
what `fit` learns lives in attributes ending in "_" (e.g. knn-fast's chosen `k_`), never in the
config. A trained model is a directory:

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

from digitlab.errors import ModelError
from digitlab.files import atomic_write_bytes, atomic_write_json, read_json


class Classifier:
    family: ClassVar[str]  # registry name, e.g. "knn", "cnn"
    Config: ClassVar[type]  # a dataclass of hyper-parameters, seed included
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
        self.history: list[dict] = []

    # -- to implement -------------------------------------------------------------------
    def fit(self, x: np.ndarray, y: np.ndarray, x_val: np.ndarray | None = None,
            y_val: np.ndarray | None = None) -> Classifier:
        raise NotImplementedError

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, float32 [N, 10]."""
        raise NotImplementedError

    def save_weights(self, directory: Path) -> None:
        raise NotImplementedError

    def load_weights(self, directory: Path) -> None:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1)

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on (x, y)."""
        return float((self.predict(x) == np.asarray(y)).mean())

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
        model = cls(config_from(cls.Config, read_model_config(directory)["config"]))
        model.load_weights(directory)
        if (directory / "history.json").exists():
            model.history = read_json(directory / "history.json")
        return model


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


def load_npz(directory: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of `directory/weights.npz`, or a ModelError saying what is wrong."""
    path = directory / "weights.npz"
    if not path.is_file():
        raise ModelError(f"{directory}: weights.npz missing")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in names}
    except (KeyError, ValueError, OSError) as e:
        raise ModelError(f"{path}: not a valid weights file ({e})") from None
