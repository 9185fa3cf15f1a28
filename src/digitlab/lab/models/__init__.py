"""Every model family behind one contract (`base.Classifier`); `create(name)` and `load(dir)`.

Families are imported lazily, so that the classical models never import torch, and so is the
contract (it imports scikit-learn): a missing extra shows as the first module a family needs
(torch for cnn, scikit-learn for knn), which the CLI turns into the extra to install.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from digitlab.errors import ModelError

if TYPE_CHECKING:
    from .base import Classifier


def __getattr__(name: str):
    if name == "Classifier":  # models.Classifier, imported when first asked for
        from .base import Classifier

        return Classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

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


BUNDLED = "bundled"  # the word that names the model shipped with digitlab


def resolve(spec: str | os.PathLike) -> Path:
    """Where a model named on the command line is: "bundled" is the ONNX file shipped with digitlab;
    anything else is a path (a model directory or an .onnx file), as given."""
    if str(spec) == BUNDLED:
        from digitlab.reader.infer import BUNDLED as shipped

        return shipped
    return Path(spec)


def load(directory: str | os.PathLike) -> Classifier:
    """A trained model from its directory (config.json tells the family)."""
    from .base import read_model_config

    config = read_model_config(Path(directory))
    return family_class(config["family"]).load(directory)
