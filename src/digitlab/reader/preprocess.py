"""Any image of a handwritten digit -> the 28x28 picture an MNIST model was trained on.

MNIST digits are bright ink on black, anti-aliased, scaled so the longer side is 20 px, and pasted
into 28x28 with their centre of mass at pixel (14, 14). People's images are anything but: a small
digit in a corner, dark pen on grey paper under a lamp, a white-on-black canvas export with a
transparent background. Each step below undoes one of those differences; `PreprocessConfig`
switches them on and off (benchmarks/reader.py measures what each one is worth).

    load_image -> to_gray -> ink_map (polarity, flatten_background, stretch_contrast, remove_specks)
               -> normalize_digit (crop, adjust_stroke, deskew, scale, centre of mass) -> uint8 [28, 28]

numpy, Pillow and scipy.ndimage only: this is on the inference path, which never imports torch.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from scipy import ndimage

from digitlab.errors import ImageError, NoDigitError

MNIST_STROKE = 1.85  # median of stroke_width() over MNIST digits, in pixels of the 20-px box
WORK_SIZE = 1024  # larger images are reduced to this longest side first: enough for ten digits in a row


@dataclass
class PreprocessConfig:
    polarity: bool = True  # detect dark-on-light vs light-on-dark and make the ink bright
    flatten_background: bool = True  # subtract the estimated background (lighting gradients, shadows)
    threshold: bool = True  # Otsu/noise-based contrast ramp: paper texture -> 0, ink core -> 1
    remove_specks: bool = True  # drop ink components far smaller than the largest one
    crop: bool = True  # cut to the ink's bounding box (off: scale the whole image)
    keep_aspect: bool = True  # longer side -> box px (off: stretch to box x box)
    stroke_width: bool = True  # thicken thin / thin thick strokes toward MNIST's width
    center_of_mass: bool = True  # centre of mass at (14, 14) (off: centre the bounding box)
    deskew: bool = False  # shear so the digit's main axis is vertical (MNIST itself is not deskewed)
    box: int = 20
    min_contrast: float = 0.08  # ink must differ from the paper by this much (of the 0-1 range)


# ---------------------------------------------------------------------------- loading
def load_image(src) -> Image.Image | np.ndarray:
    """A path, bytes, file object, PIL image or numpy array -> a PIL image (first frame, EXIF
    orientation applied) or the array itself."""
    if isinstance(src, np.ndarray):
        return src
    if isinstance(src, Image.Image):
        image, name = src, "image"
    else:
        if isinstance(src, (str, os.PathLike)):
            name = str(src)
            if not os.path.isfile(name):
                raise ImageError(f"{name}: no such file")
        elif isinstance(src, (bytes, bytearray, memoryview)):
            name, src = "input bytes", io.BytesIO(bytes(src))
        elif hasattr(src, "read"):
            name = getattr(src, "name", "input stream")
        else:
            raise ImageError(f"cannot read an image from a {type(src).__name__}")
        try:
            image = Image.open(src)
            image.seek(0)  # first frame of a GIF / multi-page TIFF
            image.load()
        except UnidentifiedImageError:
            raise ImageError(f"{name}: not a readable image (unknown or unsupported format)") from None
        except (OSError, ValueError, EOFError, SyntaxError) as e:
            raise ImageError(f"{name}: not a readable image ({e})") from None
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - a broken EXIF block should not make the pixels unreadable
        return image


def to_gray(image: Image.Image | np.ndarray) -> np.ndarray:
    """Luminance float32 [H, W] in 0-1, transparent pixels composited onto a contrasting background."""
    if isinstance(image, Image.Image):
        if image.mode == "P":
            image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        elif image.mode in ("PA", "RGBa", "La"):
            image = image.convert("RGBA")
        elif image.mode in ("1", "CMYK", "YCbCr", "LAB", "HSV"):
            image = image.convert("L" if image.mode == "1" else "RGB")
        array = np.asarray(image)
        if image.mode.startswith("I;16"):
            array = array.astype(np.uint16)
    else:
        array = image
    return array_to_gray(array)


def array_to_gray(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[2] not in (1, 2, 3, 4):
        a = np.moveaxis(a, 0, -1)  # channels first
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)) or min(a.shape[:2]) < 1:
        raise ImageError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4], not {list(a.shape)}")
    x = scale_to_unit(a)
    if x.ndim == 2:
        return x
    color, alpha = (x[..., :1], x[..., 1]) if x.shape[2] == 2 else (x[..., :3], x[..., 3] if x.shape[2] == 4 else None)
    gray = color[..., 0] if color.shape[2] == 1 else color @ np.array([0.299, 0.587, 0.114], np.float32)
    return composite_alpha(gray, alpha) if alpha is not None else gray


def scale_to_unit(a: np.ndarray) -> np.ndarray:
    """Any pixel type (bool, 8/16/32-bit integers, floats) -> float32 0-1."""
    if a.dtype == bool:
        return a.astype(np.float32)
    x = a.astype(np.float32)
    if np.issubdtype(a.dtype, np.integer):
        peak = float(x.max()) if x.size else 0.0
        # 16-bit files open as int32 "I" images: judge by the values, not only the type
        full = 255.0 if a.dtype == np.uint8 or peak <= 255 else 65535.0 if peak <= 65535 else float(peak)
        return x / full
    if x.size and np.nanmax(x) > 1.0:
        x = x / 255.0
    return np.clip(np.nan_to_num(x), 0.0, 1.0)


def composite_alpha(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Strokes drawn on a transparent canvas: put them on paper of the opposite brightness."""
    if alpha.min() > 0.99:
        return gray
    weight = alpha.sum()
    ink_brightness = float((gray * alpha).sum() / weight) if weight > 0 else 0.0
    paper = 1.0 if ink_brightness < 0.5 else 0.0
    return gray * alpha + paper * (1.0 - alpha)


def limit_size(gray: np.ndarray, size: int = WORK_SIZE) -> np.ndarray:
    h, w = gray.shape
    if max(h, w) <= size:
        return gray
    scale = size / max(h, w)
    shape = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(gray, "F").resize(shape, Image.BOX))


# ---------------------------------------------------------------------------- ink map
def dark_ink(gray: np.ndarray) -> bool:
    """True for dark ink on light paper. The paper is the image border; the ink is whatever departs
    from it furthest (light smoothing first, so one bright noise pixel does not decide)."""
    h, w = gray.shape
    ring = max(1, min(h, w) // 50)
    border = np.concatenate([gray[:ring].ravel(), gray[-ring:].ravel(),
                             gray[:, :ring].ravel(), gray[:, -ring:].ravel()])
    paper = float(np.median(border))
    smooth = ndimage.uniform_filter(gray, 3) if min(h, w) >= 9 else gray
    return paper - float(smooth.min()) > float(smooth.max()) - paper


def flatten_background(gray: np.ndarray, dark: bool) -> np.ndarray:
    """Ink-bright image with the paper's uneven brightness divided (dark ink) or subtracted (light ink)
    out. The paper is estimated by a morphological closing (opening for light ink), which keeps
    smooth lighting (a linear ramp exactly) and removes anything narrower than its window; a third
    of the shorter side is wider than any stroke of a digit that fills the image. Light falling on
    paper multiplies the ink's contrast too, hence the division."""
    h, w = gray.shape
    size = max(3, min(h, w) // 3)
    # odd reflection continues a lighting ramp past the border, so the edges get no false ink
    padded = np.clip(np.pad(gray, size, mode="reflect", reflect_type="odd"), 0.0, 1.0)
    morph = ndimage.grey_closing if dark else ndimage.grey_opening
    level = ndimage.uniform_filter(morph(padded, size=(size, size)), size=max(1, size // 2))[size:-size, size:-size]
    if dark:
        return np.clip(1.0 - gray / np.maximum(level, np.maximum(gray, 0.05)), 0.0, 1.0)
    return np.clip(gray - np.minimum(level, gray), 0.0, None)


def otsu(values: np.ndarray, bins: int = 256) -> float:
    """The threshold that best separates two classes of values (Otsu 1979)."""
    lo, hi = float(values.min()), float(values.max())
    if hi - lo < 1e-6:
        return hi
    hist, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centers = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centers) / np.maximum(w0, 1)
    m1 = (np.sum(hist * centers) - np.cumsum(hist * centers)) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(centers[int(np.argmax(between[:-1]))])


def stretch_contrast(x: np.ndarray, min_contrast: float) -> np.ndarray:
    """Ramp from just above the paper's noise to the typical ink value: texture and JPEG ringing go
    to 0, the stroke core saturates at 1 as in MNIST, and the anti-aliased edge keeps its greys."""
    paper = float(np.median(x))
    noise = 1.4826 * float(np.median(np.abs(x - paper)))
    if noise > 0.01 and min(x.shape) >= 56:  # grainy photo or scan: average the grain away first
        x = ndimage.gaussian_filter(x, 1.0)
        paper = float(np.median(x))
        noise = 1.4826 * float(np.median(np.abs(x - paper)))
    floor = paper + max(4 * noise, 0.02)
    ink = x[x > max(otsu(x), floor)]
    if ink.size == 0:
        raise NoDigitError("no digit: the image is blank")
    top = float(np.median(ink))
    if top - paper < max(min_contrast, 6 * noise):
        raise NoDigitError("no digit: nothing stands out from the background")
    low = max(floor, paper + 0.15 * (top - paper))
    return np.clip((x - low) / (top - low), 0.0, 1.0)


def remove_specks(x: np.ndarray, fraction: float = 0.02) -> np.ndarray:
    """Zero connected ink blobs holding less than `fraction` of the largest blob's ink (noise, dust)."""
    labels, n = ndimage.label(x > 0, structure=np.ones((3, 3)))
    if n <= 1:
        return x
    mass = ndimage.sum_labels(x, labels, index=np.arange(1, n + 1))
    keep = np.concatenate([[False], mass >= fraction * mass.max()])
    return np.where(keep[labels], x, 0.0).astype(np.float32)


def main_cluster(x: np.ndarray, reach: float = 0.3) -> np.ndarray:
    """Only the largest ink blob and the blobs near it (within `reach` of its size): one digit in a
    picture that also holds a smudge, a shadow's edge or a stray mark elsewhere."""
    labels, n = ndimage.label(x > 0, structure=np.ones((3, 3)))
    if n <= 1:
        return x
    boxes = ndimage.find_objects(labels)
    mass = ndimage.sum_labels(x, labels, index=np.arange(1, n + 1))
    main = int(np.argmax(mass))
    keep = {main}
    top, bottom = boxes[main][0].start, boxes[main][0].stop
    left, right = boxes[main][1].start, boxes[main][1].stop
    grown = True
    while grown:
        grown = False
        margin = reach * max(bottom - top, right - left)
        for i, (rows, cols) in enumerate(boxes):
            if i in keep:
                continue
            if (rows.start < bottom + margin and rows.stop > top - margin
                    and cols.start < right + margin and cols.stop > left - margin):
                keep.add(i)
                top, bottom = min(top, rows.start), max(bottom, rows.stop)
                left, right = min(left, cols.start), max(right, cols.stop)
                grown = True
    return np.where(np.isin(labels, [i + 1 for i in keep]), x, 0.0).astype(np.float32)


def ink_map(image, config: PreprocessConfig | None = None) -> np.ndarray:
    """Any image -> float32 [H, W] with paper 0 and ink up to 1. Raises NoDigitError when blank."""
    c = config or PreprocessConfig()
    gray = limit_size(to_gray(load_image(image)))
    dark = c.polarity and dark_ink(gray)
    x = flatten_background(gray, dark) if c.flatten_background else 1.0 - gray if dark else gray
    if c.threshold:
        x = stretch_contrast(x, c.min_contrast)
    else:
        x = x - x.min()
        if x.max() < c.min_contrast:
            raise NoDigitError("no digit: the image is blank")
        x = x / x.max()
    if c.remove_specks:
        x = remove_specks(x)
    return x.astype(np.float32)


# ---------------------------------------------------------------------------- one digit -> 28x28
def bounding_box(x: np.ndarray, level: float = 0.0) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), exclusive end, of the pixels above `level`."""
    rows, cols = np.flatnonzero((x > level).any(axis=1)), np.flatnonzero((x > level).any(axis=0))
    if rows.size == 0:
        raise NoDigitError("no digit: no ink left")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def stroke_width(x: np.ndarray) -> float:
    """Average stroke width in pixels: 2 * area / perimeter of the ink (a long stroke's width)."""
    m = (x > 0.5).astype(np.int8)
    perimeter = np.abs(np.diff(m, axis=0)).sum() + np.abs(np.diff(m, axis=1)).sum()
    return 2.0 * float(m.sum()) / max(float(perimeter), 1.0)


def adjust_stroke(x: np.ndarray, box: int) -> np.ndarray:
    """Dilate thin pen lines / erode marker strokes so that, once the digit is scaled to `box`,
    the stroke is about as wide as MNIST's."""
    scale = box / max(x.shape)
    width = stroke_width(x) * scale
    if 0.7 * MNIST_STROKE <= width <= 1.6 * MNIST_STROKE or width == 0:
        return x
    k = int(round(abs(MNIST_STROKE - width) / scale))
    if width < MNIST_STROKE:
        x = np.pad(x, k)
        return ndimage.grey_dilation(x, size=(k + 1, k + 1))
    k = min(k, int(stroke_width(x) / 2))  # never erode a stroke away
    return ndimage.grey_erosion(x, size=(k + 1, k + 1)) if k >= 1 else x


def deskew(images: np.ndarray, chunk: int = 2000) -> np.ndarray:
    """Shears each image of [N, H, W] so its pixel covariance has no row-column term, centred on its
    centre of mass; float32, same shape. The classic MNIST deskewing (as in LeCun's table), bilinear,
    vectorised over images: the lab's knn-fast and mlp-sklearn-tuned use it on whole datasets."""
    out = np.empty(images.shape, np.float32)
    height, width = images.shape[1:]
    r, c = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    rows, cols = np.meshgrid(r, c, indexing="ij")
    for start in range(0, len(images), chunk):
        img = images[start:start + chunk].astype(np.float32)
        mass = img.sum((1, 2)) + 1e-6
        cy, cx = img.sum(2) @ r / mass, img.sum(1) @ c / mass
        dy, dx = r[None, :] - cy[:, None], c[None, :] - cx[:, None]
        var_y = (img.sum(2) * dy**2).sum(1) / mass
        cov = (np.einsum("nij,ni->nj", img, dy) * dx).sum(1) / mass
        alpha = (cov / (var_y + 1e-6))[:, None, None]
        # Output pixel (row, col) samples the input at the centre of mass plus the sheared offset.
        coords = np.empty((3, len(img), height, width), np.float32)
        coords[0] = np.arange(len(img), dtype=np.float32)[:, None, None]
        coords[1] = rows - height / 2 + cy[:, None, None]
        coords[2] = cols - width / 2 + cx[:, None, None] + alpha * (rows - height / 2)
        out[start:start + chunk] = ndimage.map_coordinates(img, coords, order=1, mode="grid-constant")
    return out


def deskew_digit(x: np.ndarray) -> np.ndarray:
    """`deskew` of one ink map of any size, padded first so that the sheared and recentred digit keeps
    its ink (slants up to 2 columns per row)."""
    h, w = x.shape
    return deskew(np.pad(x, ((h // 2 + 1,) * 2, (w // 2 + 2 * h + 1,) * 2))[None])[0]


def scale_to_box(x: np.ndarray, box: int, keep_aspect: bool = True) -> np.ndarray:
    h, w = x.shape
    if keep_aspect:
        scale = box / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
    else:
        size = (box, box)
    out = np.clip(np.asarray(Image.fromarray(x.astype(np.float32), "F").resize(size, Image.LANCZOS)), 0, 1)
    return out / out.max() if out.max() > 0 else out  # thin strokes fade when scaled down: restore the peak


def paste_centered(x: np.ndarray, center_of_mass: bool = True, size: int = 28) -> np.ndarray:
    """Paste into size x size with the centre of mass (or the box centre) at pixel (14, 14)."""
    h, w = x.shape
    if center_of_mass and x.sum() > 0:
        r, c = ndimage.center_of_mass(x)
        top, left = round(size / 2 - r), round(size / 2 - c)
    else:
        top, left = (size - h) // 2, (size - w) // 2
    # keep the whole digit inside the frame even when its mass is lopsided
    top, left = min(max(top, 0), size - h), min(max(left, 0), size - w)
    out = np.zeros((size, size), np.float32)
    out[top:top + h, left:left + w] = x
    return out


def normalize_digit(x: np.ndarray, config: PreprocessConfig | None = None) -> np.ndarray:
    """An ink map holding one digit -> uint8 [28, 28], MNIST-style."""
    c = config or PreprocessConfig()
    if c.crop:
        top, left, bottom, right = bounding_box(x)
        x = x[top:bottom, left:right]
    if c.stroke_width:
        x = adjust_stroke(x, c.box)
    if c.deskew:
        x = deskew_digit(x)
        top, left, bottom, right = bounding_box(x, 0.05)
        x = x[top:bottom, left:right]
    x = scale_to_box(x, c.box, c.keep_aspect)
    return np.round(paste_centered(x, c.center_of_mass) * 255).astype(np.uint8)


def preprocess(image, config: PreprocessConfig | None = None) -> np.ndarray:
    """Any image holding one digit -> uint8 [28, 28]. Raises NoDigitError for a blank image."""
    c = config or PreprocessConfig()
    x = ink_map(image, c)
    return normalize_digit(main_cluster(x) if c.remove_specks else x, c)


def resize_only(image) -> np.ndarray:
    """The naive baseline: grayscale, squash to 28x28, nothing else."""
    gray = Image.fromarray(to_gray(load_image(image)), "F").resize((28, 28), Image.BILINEAR)
    return np.round(np.clip(np.asarray(gray), 0, 1) * 255).astype(np.uint8)
