"""The reader: any image of a handwritten digit or number -> digits, with calibrated confidence.

Torch-free by design (numpy, Pillow, onnxruntime only), so it installs and starts light;
a lint rule (see pyproject.toml) keeps torch, scikit-learn and `digitlab.lab` out of it.
"""

from .infer import BUNDLED, OnnxModel, bundled, read_card
from .preprocess import PreprocessConfig, preprocess
from .recognize import (
    Digit,
    Reading,
    apply_temperature,
    classify,
    expected_calibration_error,
    fit_temperature,
    get_model,
    read,
)

__all__ = ["BUNDLED", "Digit", "OnnxModel", "PreprocessConfig", "Reading", "apply_temperature", "bundled",
           "classify", "expected_calibration_error", "fit_temperature", "get_model", "preprocess", "read",
           "read_card"]
