"""digitlab: recognize handwritten digits, and train and compare the models that do it."""

__version__ = "0.2.0"


def classify(image, model=None, min_confidence: float = 0.0) -> dict:
    """One handwritten digit in any image (path, bytes, PIL image, numpy array) ->
    {"label", "status", "confidence", "probabilities", "image"}; label None when blank or unsure."""
    from .reader.recognize import classify as _classify

    return _classify(image, model, min_confidence)


def read(image, model=None, min_confidence: float = 0.0):
    """A row of handwritten digits -> Reading(text, digits), each digit with label, confidence, box."""
    from .reader.recognize import read as _read

    return _read(image, model, min_confidence)
