"""The reader: any image of a handwritten digit or number -> digits, with calibrated confidence.

Torch-free by design (numpy, Pillow, pyspng, OpenCV, onnxruntime), so it installs and starts light;
a lint rule (see pyproject.toml) keeps torch, scikit-learn and `digitlab.lab` out of it.
"""

from digitlab.reader.calibration import apply_temperature, expected_calibration_error, fit_temperature, nll, softmax
from digitlab.reader.infer import BUNDLED, OnnxModel, bundled
from digitlab.reader.pipeline import PIPELINE_VERSION, preprocess
from digitlab.reader.preprocess import PreprocessConfig
from digitlab.reader.recognize import Digit, Reading, as_dict, classify, classify_many, get_model, read

__all__ = ["BUNDLED", "PIPELINE_VERSION", "Digit", "OnnxModel", "PreprocessConfig", "Reading", "apply_temperature",
           "as_dict", "bundled", "classify", "classify_many", "expected_calibration_error", "fit_temperature",
           "get_model", "nll", "preprocess", "read", "softmax"]
