"""Safe, fast image loading: bytes, a path, a file object, a PIL image or a numpy array -> uint8 grey
(and alpha) at a bounded size, plus the scale back to the input's pixels.

People send anything: a 12 MP phone photo, a 16x16 scan, a canvas export with transparency, a file
that only claims to be a PNG, or a 100-byte "decompression bomb" whose header promises 10^10
pixels. So the loader

- refuses files over `Limits.max_bytes` and headers over `Limits.max_pixels` before decoding a single
  pixel (the service passes its own, smaller limits: one check, in one place, parsing the header once);
- decodes JPEGs at 1/2, 1/4 or 1/8 size when that still leaves about WORK_SIZE pixels (libjpeg's
  draft mode skips most of the work), and reduces everything else to WORK_SIZE in uint8: a full-size
  image is never converted to float;
- turns every failure (truncated, corrupt, unknown format, odd mode) into a one-line ImageError.

    image = load(src)  # Loaded(gray uint8 [h, w], alpha uint8 [h, w] | None, scale, size)
    x_input = x_work * image.scale[0]; y_input = y_work * image.scale[1]
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import cv2
import numpy as np
import pyspng
from PIL import Image, UnidentifiedImageError

from digitlab.errors import ImageError, ImageTooLargeError

MAX_BYTES = 64 * 2**20  # a 12 MP JPEG is 3-8 MB; a 64 MB file is not a photo of a digit
MAX_PIXELS = 64_000_000  # 8000 x 8000: every phone camera; below Pillow's own bomb limit (89 M)
WORK_SIZE = 1024  # images are reduced to this longest side: enough for ten digits in a row
ARRAY_DTYPES = ("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
                "float16", "float32", "float64")



@dataclass(frozen=True)
class Limits:
    """What an image may cost before any pixel is decoded."""

    max_bytes: int = MAX_BYTES
    max_pixels: int = MAX_PIXELS


LIMITS = Limits()

cv2.setNumThreads(1)  # one image is small work: thread start-up costs more than it saves


@dataclass(frozen=True)
class Loaded:
    gray: np.ndarray  # uint8 [h, w], h and w <= WORK_SIZE
    alpha: np.ndarray | None  # uint8 [h, w] where the image has any transparency, else None
    scale: tuple[float, float]  # input pixels per working pixel, (x, y)
    size: tuple[int, int]  # the input's (width, height), after EXIF orientation


def load(src, max_side: int = WORK_SIZE, limits: Limits = LIMITS) -> Loaded:
    """Any supported source -> Loaded. Raises ImageError with a one-line reason (ImageTooLargeError
    when over `limits`)."""
    if isinstance(src, Loaded):
        return src
    if isinstance(src, np.ndarray):
        return from_array(src, max_side, limits)
    if isinstance(src, Image.Image):
        return from_pil(src, "image", max_side, limits)
    max_bytes = limits.max_bytes
    too_big = f"larger than {max_bytes / 2**20:g} MB"
    if isinstance(src, (str, os.PathLike)):
        name = str(src)
        try:
            if os.path.getsize(name) > max_bytes:
                raise ImageTooLargeError(f"{name}: file {too_big}")
            with open(name, "rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            raise ImageError(f"{name}: no such file") from None
        except OSError as e:  # a folder, no permission, an I/O error
            raise ImageError(f"{name}: cannot be read ({e.strerror or type(e).__name__})") from None
        if len(data) > max_bytes:  # grew since its size was read
            raise ImageTooLargeError(f"{name}: file {too_big}")
        return open_image(data, name, max_side, limits)
    if isinstance(src, (bytes, bytearray, memoryview)):
        if len(src) > max_bytes:
            raise ImageTooLargeError(f"input bytes: {too_big}")
        return open_image(bytes(src), "input bytes", max_side, limits)
    if hasattr(src, "read"):
        name = getattr(src, "name", "input stream")
        data = src.read(max_bytes + 1)
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{name}: a binary stream is needed")
        if len(data) > max_bytes:
            raise ImageTooLargeError(f"{name}: {too_big}")
        return open_image(bytes(data), name, max_side, limits)
    raise ImageError(f"cannot read an image from a {type(src).__name__}")


def open_image(data: bytes, name: str, max_side: int, limits: Limits = LIMITS) -> Loaded:
    if (claimed := png_size(data)) is not None:
        # PNG, the usual upload (and the usual bomb): our limit before Pillow's, whose own check would
        # otherwise answer first, with its warning or its message, for headers over 89 M pixels
        check_pixels(*claimed, name, limits)
    if (size := plain_png(data, max_side)) and (loaded := decode_png(data, size)) is not None:
        return loaded
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not a readable image (unknown or unsupported format)") from None
    except Image.DecompressionBombError:  # over 179 M pixels, so over any limit of ours too
        raise ImageTooLargeError(f"{name}: more than {limits.max_pixels:,} pixels (the limit)") from None
    except Exception as e:  # noqa: BLE001 - Pillow's plugins raise many types on bad headers
        raise ImageError(f"{name}: not a readable image ({_one_line(e)})") from None
    with image:
        return from_pil(image, name, max_side, limits)


def check_pixels(w: int, h: int, name: str, limits: Limits) -> None:
    if w < 1 or h < 1:
        raise ImageError(f"{name}: empty image ({w}x{h})")
    if w * h > limits.max_pixels:
        raise ImageTooLargeError(f"{name}: {w}x{h} = {w * h:,} pixels exceeds the {limits.max_pixels:,}-pixel limit")


def png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR, or None when the bytes are not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# PNG (bit depth, colour type) that libspng decodes to Pillow's exact pixels: Pillow's L, 1, RGB, RGBA
_PLAIN_PNG_KINDS = frozenset({(8, 0), (1, 0), (8, 2), (8, 6)})
# Chunks that Pillow's path handles and the fast path does not: a transparent colour key (tRNS), an
# animation (acTL), and metadata that can turn the picture (an eXIf chunk, EXIF or XMP in a text
# chunk, which Pillow reads, sometimes from after the pixels). Found by a byte search, so a false
# alarm in the compressed pixels only costs time.
_PILLOW_MARKS = (b"tRNS", b"acTL", b"eXIf", b"exif", b"XML:com.adobe.xmp")


def plain_png(data: bytes, max_side: int) -> tuple[int, int] | None:
    """The (width, height) of a PNG that libspng decodes to exactly Pillow's pixels, faster (a 280x280
    canvas in a third to a half of Pillow's time), read from its IHDR header without Pillow; None for
    anything else. Plain: a still 8-bit (or 1-bit) grey, RGB or RGBA image that needs no reduction,
    without a transparent colour key and without orientation metadata."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if (data[24], data[25]) not in _PLAIN_PNG_KINDS or not (0 < w <= max_side and 0 < h <= max_side):
        return None
    return None if any(mark in data for mark in _PILLOW_MARKS) else (w, h)


def decode_png(data: bytes, size: tuple[int, int]) -> Loaded | None:
    """A plain_png -> Loaded with libspng (pyspng), or None for anything unexpected (a damaged or
    truncated file libspng refuses): Pillow's path then decides, with its own errors."""
    try:
        a = pyspng.load(data)
    except (RuntimeError, ValueError, MemoryError):
        return None
    w, h = size
    if a.dtype != np.uint8 or a.shape[:2] != (h, w) or not (a.ndim == 2 or a.ndim == 3 and a.shape[2] in (3, 4)):
        return None
    return Loaded(*gray_alpha(a), (1.0, 1.0), size)


def from_pil(image: Image.Image, name: str, max_side: int, limits: Limits = LIMITS) -> Loaded:
    w, h = image.size
    check_pixels(w, h, name, limits)
    try:
        orientation = _orientation(image)
        if image.format == "JPEG" and max(w, h) > max_side and image.mode in ("L", "RGB"):
            # libjpeg decodes at 1/2, 1/4 or 1/8 the size, the smallest that stays >= the size asked:
            # asking for 90% of max_side lets a 4000-px photo decode at 1000 px instead of 2000 + a resize
            side = max_side * 9 // 10
            image.draft("L", (max(1, w * side // max(w, h)), max(1, h * side // max(w, h))))
        image.load()
        gray, alpha = _gray_alpha(image, max_side)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLargeError(f"{name}: more than {limits.max_pixels:,} pixels (the limit)") from None
    except MemoryError:
        raise ImageError(f"{name}: too large to decode") from None
    except Exception as e:  # noqa: BLE001 - truncated data, bad chunks, unsupported modes
        raise ImageError(f"{name}: not a readable image ({_one_line(e)})") from None
    if orientation in _TRANSPOSE:
        gray = _TRANSPOSE[orientation](gray)
        alpha = _TRANSPOSE[orientation](alpha) if alpha is not None else None
        if orientation >= 5:  # a quarter turn swaps width and height
            w, h = h, w
    return Loaded(gray, alpha, (w / gray.shape[1], h / gray.shape[0]), (w, h))


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block should not make the pixels unreadable
        return 1


# EXIF orientation -> the numpy transform that shows the image upright (as ImageOps.exif_transpose;
# the tests compare the two). Open images stay on their first frame: animations are never decoded.
_TRANSPOSE = {
    2: np.fliplr, 3: lambda a: a[::-1, ::-1], 4: np.flipud, 5: lambda a: a.T,
    6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a.T, 2), 8: np.rot90,
}


def _gray_alpha(image: Image.Image, max_side: int) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 grey and alpha at <= max_side, working in the image's own integer mode."""
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "L")
    elif mode in ("1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        image = image.convert("L")
    elif mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _from_wide(image, max_side), None
    elif mode in ("PA", "RGBa", "La"):
        image = image.convert("RGBA")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ImageError(f"unsupported image mode {mode}")
    return gray_alpha(np.asarray(_reduce(image, max_side)))  # one copy out of Pillow, then OpenCV


def gray_alpha(a: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 pixels, grey [H, W] or [H, W, C] with C = 2 (LA), 3 (RGB) or 4 (RGBA) -> (grey, alpha),
    alpha None when every pixel is opaque. OpenCV: one pass per output."""
    if a.ndim == 2:
        return a, None
    channels = a.shape[2]
    gray = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY) if channels == 3 else \
        cv2.cvtColor(a, cv2.COLOR_RGBA2GRAY) if channels == 4 else cv2.extractChannel(a, 0)
    if channels == 3:
        return gray, None
    alpha = cv2.extractChannel(a, channels - 1)
    return gray, (alpha if cv2.minMaxLoc(alpha)[0] < 255 else None)


def _reduce(image: Image.Image, max_side: int) -> Image.Image:
    w, h = image.size
    if max(w, h) <= max_side:
        return image
    f = max(w, h) / max_side
    factor = int(f)  # Image.reduce: a fast integer box filter, then a small exact resize
    if factor >= 2:
        image = image.reduce(factor)
    size = (max(1, round(w / f)), max(1, round(h / f)))
    return image.resize(size, Image.BOX) if image.size != size else image


def _from_wide(image: Image.Image, max_side: int) -> np.ndarray:
    """16-bit and 32-bit integer or float images: reduced in their own mode, then scaled to uint8."""
    if image.mode != "F":
        image = image.convert("I")  # I;16 variants -> 32-bit ints (Pillow resizes I and F)
    a = np.asarray(_reduce(image, max_side))
    return to_uint8(a)


# ---------------------------------------------------------------------------- arrays
def from_array(a: np.ndarray, max_side: int = WORK_SIZE, limits: Limits = LIMITS) -> Loaded:
    """[H, W], [H, W, 1-4] or channels-first [1-4, H, W] of bool, ints or floats (no NaN needed: NaN
    counts as 0). Reduced in its own dtype where OpenCV can, so a big float array is not copied."""
    a = np.asarray(a)
    if a.dtype.name not in ARRAY_DTYPES:
        raise ImageError(f"unsupported array dtype {a.dtype}")
    if a.ndim == 3 and a.shape[0] in (1, 2, 3, 4) and a.shape[2] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)) or min(a.shape[:2]) < 1:
        raise ImageError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4], not {list(a.shape)}")
    check_pixels(a.shape[1], a.shape[0], "array", limits)
    h, w = a.shape[:2]
    if a.dtype == bool:
        a = a.view(np.uint8) * np.uint8(255)
    elif a.dtype.name in ("int8", "uint32", "uint64", "int64", "int32", "float16"):
        a = a.astype(np.float32 if a.dtype.name in ("float16", "int8") else np.float64)
    full = _full_scale(a)
    if max(h, w) > max_side:
        f = max(h, w) / max_side
        size = (max(1, round(w / f)), max(1, round(h / f)))
        if a.dtype.kind == "f":
            a = np.nan_to_num(a, nan=0.0, posinf=full, neginf=0.0)
        a = cv2.resize(np.ascontiguousarray(a), size, interpolation=cv2.INTER_AREA)
    if a.ndim == 3 and a.shape[2] in (2, 4):
        color, alpha = a[..., :-1], to_uint8(a[..., -1], full)
    else:
        color, alpha = a, None
    if color.ndim == 3 and color.shape[2] == 3:
        color = color.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    elif color.ndim == 3:
        color = color[..., 0]
    gray = to_uint8(color, full)
    if alpha is not None and alpha.min() == 255:
        alpha = None
    return Loaded(gray, alpha, (w / gray.shape[1], h / gray.shape[0]), (w, h))


def _full_scale(a: np.ndarray) -> float:
    """The value that means "white": 255 for 8-bit data, 65535 for 16-bit, 1.0 for floats in 0-1."""
    if a.dtype == np.uint8:
        return 255.0
    if a.dtype == np.uint16:
        return 65535.0 if a.size and int(a.max()) > 255 else 255.0
    peak = float(np.nanmax(a)) if a.size else 0.0
    if not np.isfinite(peak):
        finite = a[np.isfinite(a)]
        peak = float(finite.max()) if finite.size else 0.0
    if a.dtype.kind == "f":
        return 1.0 if peak <= 1.0 else 255.0 if peak <= 255.0 else 65535.0 if peak <= 65535.0 else peak
    return 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else peak


def to_uint8(a: np.ndarray, full: float | None = None) -> np.ndarray:
    """Any bounded-size numeric array -> uint8 0-255 (values above `full` clip, NaN -> 0)."""
    if a.dtype == np.uint8:
        return a
    full = full if full is not None else _full_scale(a)
    x = a.astype(np.float32) * np.float32(255.0 / full)
    if x.dtype.kind == "f":
        x = np.nan_to_num(x, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(x + 0.5, 0, 255).astype(np.uint8)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]
