"""Which optional extra provides a module: a command that needs a missing one says what to install.

`pip install digitlab` is the reader alone (numpy, Pillow, OpenCV, ONNX Runtime): `predict`, `data`
and the Python API's `classify`/`read` work without the rest. The extras, named for jobs:

    train   torch (CPU), scikit-learn, scipy, safetensors, onnx: train, lr-find, evaluate, benchmark,
            export, finetune
    report  matplotlib: the plots of `report` and `lr-find`
    serve   FastAPI, uvicorn, python-multipart: `serve`
    all     the three above
    scale   pyarrow, Ray Data: predict into Parquet, `pack`, `predict --engine ray` (not in all: ~700 MB)
"""

from __future__ import annotations

from digitlab.errors import DigitlabError

# top-level module -> (the extra that installs it, the name pip knows it by)
PROVIDERS: dict[str, tuple[str, str]] = {
    "torch": ("train", "torch"),
    "sklearn": ("train", "scikit-learn"),
    "scipy": ("train", "scipy"),
    "safetensors": ("train", "safetensors"),
    "onnx": ("train", "onnx"),
    "onnxscript": ("train", "onnxscript"),
    "matplotlib": ("report", "matplotlib"),
    "fastapi": ("serve", "fastapi"),
    "starlette": ("serve", "fastapi"),
    "uvicorn": ("serve", "uvicorn"),
    "multipart": ("serve", "python-multipart"),
    "python_multipart": ("serve", "python-multipart"),
    "pyarrow": ("scale", "pyarrow"),
    "ray": ("scale", "ray[data]"),
}


class MissingExtraError(DigitlabError):
    """A command needs a module of an optional extra that is not installed."""


def missing_extra(error: ModuleNotFoundError, what: str) -> MissingExtraError | None:
    """The one-line error for `what` (e.g. "train cnn") when `error` is a module of an extra; None
    when the missing module belongs to no extra (a broken install: the traceback is worth seeing)."""
    top = (error.name or "").split(".")[0]
    if top not in PROVIDERS:
        return None
    extra, package = PROVIDERS[top]
    return MissingExtraError(f'{what} needs {package}, which is not installed: pip install "digitlab[{extra}]"')


def require(what: str, *modules: str) -> None:
    """Raises MissingExtraError, before any work starts, when one of `modules` is not installed:
    a command that would import it late (after evaluating a test set, say) fails at once instead."""
    import importlib.util

    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:  # what a finder raises for a module it knows to be absent
            found = False
        if not found:
            error = ModuleNotFoundError(f"No module named {module!r}", name=module)
            raise missing_extra(error, what) or error
