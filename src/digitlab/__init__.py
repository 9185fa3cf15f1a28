"""digitlab: recognize handwritten digits, and train and compare the models that do it."""

__version__ = "0.2.0"


def classify(image, model=None, min_confidence: float | None = None) -> dict:
    """One handwritten digit in any image (path, bytes, PIL image, numpy array) ->
    {"label", "guess", "status", "confidence", "probabilities", "image"}; label None when blank or unsure."""
    from .reader.recognize import classify as _classify

    return _classify(image, model, min_confidence)


def read(image, model=None, min_confidence: float | None = None):
    """A row of handwritten digits -> Reading(text, status, digits), each digit with label, guess,
    status, confidence, box."""
    from .reader.recognize import read as _read

    return _read(image, model, min_confidence)
