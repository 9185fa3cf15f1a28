"""The work of a request, run in the service's thread pool (never on the event loop).

Each image is checked and decoded once, by the reader's loader with the service's limits (its header
read before any pixel is decoded), and the decoded image is what the reader reads. Reading goes
through the model's `MicroBatcher`, so requests preprocessed at the same time share one network call.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from digitlab import reader
from digitlab.errors import ImageError, ImageTooLargeError
from digitlab.reader.hint import several_digits_hint
from digitlab.reader.image import Loaded as Picture
from digitlab.reader.image import load
from digitlab.reader.preprocess import composite_alpha
from digitlab.serve.config import ServeConfig
from digitlab.serve.errors import ApiError
from digitlab.serve.service import Loaded

API_ADVICE = "use POST /v1/read"  # how the API reads a number (the CLI says "use --multi")
CROP_SIDE = 96  # a stored correction's crop: at most this many pixels a side, a few KB as PNG
CROP_MARGIN = 0.15  # of the digit's longer side, around its box


def picture(source: bytes | np.ndarray, cfg: ServeConfig) -> Picture:
    """The one check and decode of an upload: 413 over the limits, 400 when it is not a readable image."""
    if isinstance(source, bytes) and not source:
        raise ApiError(400, "empty_body", "the image is empty (0 bytes)")
    try:
        return load(source, limits=cfg.limits)
    except ImageTooLargeError as e:
        raise ApiError(413, "too_large", f"image too large: {_without_name(e)}") from None
    except ImageError as e:
        text = _without_name(e)
        error = "not_an_image" if "unknown or unsupported format" in text else "corrupt_image"
        raise ApiError(400, error, "not an image Pillow can read (PNG, JPEG, GIF, WebP, BMP, TIFF...)"
                       if error == "not_an_image" else f"corrupt image: {text}") from None


def _without_name(e: Exception) -> str:
    return str(e).removeprefix("input bytes: ").removeprefix("array: ")


def png_data_url(x28: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png(x28)).decode()


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(a, np.uint8)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def classify(loaded: Loaded, image: Picture, min_confidence: float | None) -> dict:
    with loaded.batcher.working():
        try:
            return reader.classify(image, model=loaded.batcher, min_confidence=min_confidence)
        except ImageError as e:  # the reader's own refusal of a decoded image (an odd mode, say)
            raise ApiError(400, "not_an_image", str(e)) from None


def predict_one(loaded: Loaded, source: bytes | np.ndarray, cfg: ServeConfig, min_confidence: float | None,
                include_image: bool) -> dict:
    """/v1/predict's answer: the reader's (`reader.as_dict`, as the CLI's --json prints it), the model,
    the several-digits hint when the picture holds more than one digit, the 28x28 if asked."""
    result = classify(loaded, picture(source, cfg), min_confidence)
    out = {**reader.as_dict(result), "model": loaded.name}
    if hint := several_digits_hint(result, API_ADVICE):
        out["hint"] = hint
    if include_image and result.get("image") is not None:
        out["image"] = png_data_url(result["image"])
    return out


def read_one(loaded: Loaded, source: bytes | np.ndarray, cfg: ServeConfig, min_confidence: float | None) -> dict:
    image = picture(source, cfg)
    with loaded.batcher.working():
        try:
            reading = reader.read(image, model=loaded.batcher, min_confidence=min_confidence)
        except ImageError as e:
            raise ApiError(400, "not_an_image", str(e)) from None
    return {**reading.as_dict(), "model": loaded.name}  # boxes: the reader's, in the upload's pixels


def crop(image: Picture, box: list[int] | None) -> np.ndarray:
    """The digit's surroundings in the upload, reduced to at most CROP_SIDE a side: for a person to
    check a correction by, bounded in size whatever was uploaded."""
    gray = image.gray if image.alpha is None else composite_alpha(image.gray, image.alpha)
    if box is not None:  # the box is in the upload's pixels; the grey at the working size
        sx, sy = image.scale
        left, top, right, bottom = box[0] / sx, box[1] / sy, box[2] / sx, box[3] / sy
        m = CROP_MARGIN * max(right - left, bottom - top)
        h, w = gray.shape
        gray = gray[max(0, int(top - m)):min(h, int(bottom + m) + 1), max(0, int(left - m)):min(w, int(right + m) + 1)]
    h, w = gray.shape
    if max(h, w) > CROP_SIDE:
        f = CROP_SIDE / max(h, w)
        gray = np.asarray(Image.fromarray(gray).resize((max(1, round(w * f)), max(1, round(h * f))), Image.BOX))
    return gray


def correction(loaded: Loaded, source: bytes | np.ndarray, cfg: ServeConfig) -> dict:
    """What a correction stores: {"image": crop PNG, "digit": 28x28 PNG, "kept_apart": reason or None}.
    A blank image has nothing to learn from (422); one the reader calls not a digit is kept apart."""
    image = picture(source, cfg)
    result = classify(loaded, image, 0.0)
    if result["status"] == "no digit" or result.get("image") is None:
        raise ApiError(422, "no_digit", "the reader finds no digit in this image: nothing to learn from")
    kept_apart = "not a digit" if result["status"] == "not a digit" else None
    return {"image": png(crop(image, result.get("box"))), "digit": png(result["image"]), "kept_apart": kept_apart}

