"""Every model family behind one contract (`base.Classifier`); `create(name)` and `load(dir)`.

Families are imported lazily so that the classical models never import torch.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from digitlab.errors import ModelError

from .base import Classifier, read_model_config

# registry name -> "module:Class"
FAMILIES: dict[str, str] = {
    "mlp": "mlp:MLP",
    "cnn": "cnn:CNN",
    "resnet34": "resnet:ResNet34",
    "knn": "knn:KNN",
    "knn-fast": "knn:KNNFast",
    "mlp-sklearn": "sklearn_mlp:SklearnMLP",
    "mlp-sklearn-tuned": "sklearn_mlp:TunedSklearnMLP",
    "fast": "fast:Fast",
    "best": "best:Best",
    "ensemble": "ensemble:Ensemble",
}


def family_class(name: str) -> type[Classifier]:
    if name not in FAMILIES:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(FAMILIES)}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def create(name: str, **overrides) -> Classifier:
    """A new, untrained model of family `name` with its default config, `overrides` applied."""
    return family_class(name)(**overrides)


def load(directory: str | os.PathLike) -> Classifier:
    """A trained model from its directory (config.json tells the family)."""
    config = read_model_config(Path(directory))
    return family_class(config["family"]).load(directory)
