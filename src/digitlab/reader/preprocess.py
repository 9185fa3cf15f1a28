"""The crafts of the reader's page and normalize steps (the order they run in: `pipeline`).

MNIST digits are bright ink on black, anti-aliased, scaled so the longer side is 20 px, and pasted
into 28x28 with their centre of mass at pixel (14, 14). People's images are anything but: a small
digit in a corner, a cell cut tightly from a form so the strokes touch the edges, a 16x16 scan blown
up 7x, dark pen on grey paper under a lamp, a white-on-black canvas export with a transparent
background. Each function below undoes one of those differences; `PreprocessConfig` (the user's
settings) switches them on and off (benchmarks/reader.py measures what each one is worth).

    page:      dark_ink (polarity), uneven_paper + flatten_background (lighting), stretch_contrast
    find:      pick_digit, remove_specks
    normalize: normalize_digit (crop, adjust_stroke, deskew, scale, centre of mass) -> uint8 [28, 28]

Paper and ink are told apart by Otsu's threshold and the image border, never by the median: a digit
that fills its frame can cover most of the picture. numpy, Pillow and OpenCV only: this is the
inference path, which imports neither torch nor scipy.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from digitlab.errors import NoDigitError

from .image import load

MNIST_STROKE = 1.85  # median of stroke_width() over MNIST digits, in pixels of the 20-px box
PAPER_LEVEL = 32  # where flatten_background puts the paper (ink-bright grey levels)
STROKE_WORK = 80  # a cropped digit is reduced to this longest side before stroke and scale steps
SINGLE_WORK = 160  # an image of one digit is first read reduced to about this longest side, and
SMALL_DIGIT = 64  # again at a finer scale if its digit came out shorter than this


@dataclass
class PreprocessConfig:
    polarity: bool = True  # detect dark-on-light vs light-on-dark and make the ink bright
    flatten_background: bool = True  # divide out uneven paper brightness (lighting gradients, shadows)
    threshold: bool = True  # Otsu/noise-based contrast ramp: paper texture -> 0, ink core -> 1
    remove_lines: bool = True  # printed ruled lines, grids, box frames and underlines are not ink (structure.py)
    remove_specks: bool = True  # drop ink components far smaller than the largest one
    crop: bool = True  # cut to the ink's bounding box (off: scale the whole image)
    keep_aspect: bool = True  # longer side -> box px (off: stretch to box x box)
    stroke_width: bool = True  # thicken thin / thin thick strokes toward MNIST's width
    center_of_mass: bool = True  # centre of mass at (14, 14) (off: centre the bounding box)
    deskew: bool = False  # shear so the digit's main axis is vertical (MNIST itself is not deskewed)
    box: int = 20
    aspect: float = 1.0  # width x this after cropping: a frame-filling digit's lost aspect (see narrower_views)
    erode_share: float = 0.5  # stroke_width erodes at most this share of the average stroke (see thinner_view)
    min_contrast: float = 0.08  # ink must differ from the paper by this much (of the 0-1 range)


# ---------------------------------------------------------------------------- ink map
def composite_alpha(gray: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Strokes drawn on a transparent canvas: put them on paper of the opposite brightness."""
    weight = float(cv2.sumElems(alpha)[0])
    ink = float(gray.ravel().astype(np.float32) @ alpha.ravel().astype(np.float32)) / weight if weight > 0 else 0.0
    if ink < 128:  # dark strokes: white paper shows where the canvas is transparent
        return 255 - cv2.multiply(255 - gray, alpha, scale=1 / 255)
    return cv2.multiply(gray, alpha, scale=1 / 255)


def histogram(x: np.ndarray) -> np.ndarray:
    """uint8 image -> float64 [256] pixel counts. OpenCV's histogram is faster than np.bincount, but
    slow when most pixels fall in one bin (each count waits for the last), and ink-bright paper is 0:
    so the zeros are counted apart (a vectorized count) and the histogram skips them."""
    hist = cv2.calcHist([x], [0], x, [256], [0, 256]).ravel().astype(np.float64)
    hist[0] = x.size - cv2.countNonZero(x)
    return hist


LEVELS = np.arange(256, dtype=np.float64)


def otsu(u8: np.ndarray, hist: np.ndarray | None = None) -> int:
    """The grey level that best separates two classes of pixels (Otsu 1979), from the histogram: the
    first level of maximal between-class variance, as OpenCV's THRESH_OTSU picks it. Computed in pixel
    counts, not shares: the variance times n^2, a constant factor that leaves the argmax where it is."""
    h = histogram(u8) if hist is None else hist
    n1 = np.cumsum(h)
    n = float(n1[-1])
    mass = np.cumsum(h * LEVELS)
    n2 = n - n1
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = (mass[-1] * n1 - n * mass) ** 2 / (n1 * n2)
    # a class emptier than float32's epsilon of the pixels is no class (OpenCV's test)
    sigma[np.minimum(n1, n2) < np.finfo(np.float32).eps * n] = -1.0
    return int(np.argmax(sigma)) if n > 0 and sigma.max() >= 0 else 0


def border(a: np.ndarray) -> np.ndarray:
    h, w = a.shape
    ring = max(1, min(h, w) // 50)
    return np.concatenate([a[:ring].ravel(), a[-ring:].ravel(), a[:, :ring].ravel(), a[:, -ring:].ravel()])


def dark_ink(gray: np.ndarray) -> bool:
    """True for dark ink on light paper. The paper is the image border's median (a frame-filling
    digit touches the border, but rarely most of it); the ink is whatever departs from it furthest,
    on a lightly smoothed copy of at most 512 px (so that one noise pixel does not decide, and a
    shadow, which departs from the paper less than ink does, does not either). The border's median
    is taken before smoothing: the median needs no help against a noise pixel, and on a small scan
    smoothing mixes the border with the ink beside it (a 16x16 digit filling its frame)."""
    s = small_copy(gray, 512)
    paper = median(border(s))
    if min(s.shape) >= 9:
        s = cv2.blur(s, (3, 3))
    low, high, _, _ = cv2.minMaxLoc(s)
    return paper - low > high - paper


def median(a: np.ndarray) -> float:
    """np.median of a 1-d array, the same value without its overhead (a third of the time)."""
    k = a.size // 2
    if a.size % 2:
        return float(np.partition(a, k)[k])
    part = np.partition(a, (k - 1, k))
    return (float(part[k - 1]) + float(part[k])) / 2


def small_copy(a: np.ndarray, side: int = 64) -> np.ndarray:
    h, w = a.shape
    f = side / max(h, w)
    if f >= 1:
        return a
    a = reduce_by(a, int(1 / f) // 2)  # most of the way at an integer factor (fast), then exactly
    return cv2.resize(a, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def reduce_by(a: np.ndarray, factor: int) -> np.ndarray:
    """Mean of factor x factor blocks (a last partial row or column of blocks is dropped): OpenCV's
    area resize at an exact integer factor is a fast path, ten times faster than at other ratios."""
    if factor <= 1:
        return a
    h, w = (a.shape[0] // factor) * factor, (a.shape[1] // factor) * factor
    return cv2.resize(a[:h, :w], (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def uneven_paper(x: np.ndarray) -> bool:
    """Does the paper's brightness vary across the image (lamp, shadow) by more than a sixth of the
    image's contrast? Judged on a 64x64 copy in 4x4 tiles, each tile's paper level its 10th
    percentile (ink-bright: paper is dark), ignoring the three inkiest tiles, which a digit filling
    the frame may cover entirely. Clean scans and canvases are flat, so they skip flattening, which
    could eat the strokes of a digit that fills the frame."""
    if min(x.shape) < 8:
        return False
    s = cv2.resize(reduce_by(x, min(x.shape) // 64), (64, 64), interpolation=cv2.INTER_AREA)
    tiles = s.reshape(4, 16, 4, 16).transpose(0, 2, 1, 3).reshape(16, 256)
    levels = np.sort(np.partition(tiles, 25, axis=1)[:, 25])  # each tile's 10th percentile
    low, high = np.partition(s.ravel(), (40, 4055))[[40, 4055]]  # 1st and 99th percentiles
    return float(levels[-4]) - float(levels[0]) > max(8.0, (float(high) - float(low)) / 6)


def two_level(x: np.ndarray) -> bool:
    """A 1-bit image (two grey levels): a bitmap has no lighting to flatten, and its 'uneven paper'
    is a thick digit filling the frame, which flattening would hollow out to its outline."""
    low, high, _, _ = cv2.minMaxLoc(x)
    between = np.zeros(256, np.uint8)
    between[int(low) + 1:int(high)] = 1
    # a sparse sample first: anti-aliased ink (a canvas, a photo) shows its greys in any sample
    return not any(cv2.countNonZero(cv2.LUT(part, between)) for part in (np.ascontiguousarray(x[::4, ::4]), x))


def flatten_background(x: np.ndarray, dark: bool) -> np.ndarray:
    """Ink-bright uint8 -> uint8 with the paper's uneven level taken out. The paper level is an
    opening (it removes bright strokes narrower than the window) of a 64-px copy, smoothed and scaled
    back up: cheap at any image size, and a shadow's soft edge survives it while strokes do not.
    Light falling on dark-ink paper multiplies the ink's contrast too, hence a division there.
    The copy is 64 px on its short side (and at most 8x that long), the window a quarter of that: a
    row of digits is as tall as one digit, and a window taller than the row would flatten nothing.
    The copy is padded by repeating its edge: a mirrored edge turns a lighting ramp into a peak there,
    which the opening cuts off, and the division made the cut a band of "ink" along the edge (a plain
    grey ramp read as a 1 once the reader looked at it in the other polarity, see `looks`)."""
    h, w = x.shape
    s = small_copy(x, min(8 * 64, 64 * max(h, w) // max(1, min(h, w)))).astype(np.float32)
    k = max(3, min(s.shape) // 4) | 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    level = cv2.morphologyEx(cv2.copyMakeBorder(s, k, k, k, k, cv2.BORDER_REPLICATE), cv2.MORPH_OPEN, kernel)
    level = cv2.blur(level, (k // 2 + 1, k // 2 + 1))[k:-k, k:-k]
    level = cv2.resize(level, (x.shape[1], x.shape[0]), interpolation=cv2.INTER_LINEAR)
    xf = x.astype(np.float32)
    if dark:  # in paper brightness: ink = 1 - gray / paper = (paper - 255 + x) / paper
        paper = np.maximum(255.0 - level, 12.0)
        flat = cv2.divide(xf - 255.0 + paper, paper, scale=255.0)
    else:
        flat = cv2.subtract(xf, level)
    # the paper lands at PAPER_LEVEL, not 0, so its grain is kept whole for the noise estimate
    return cv2.convertScaleAbs(cv2.max(flat + PAPER_LEVEL, 0.0))


def noise_level(x: np.ndarray) -> float:
    """Pixel noise sigma from neighbour differences: ink and edges are a minority of pixel pairs, so
    the median difference measures the grain whatever share of the picture the ink covers."""
    step = max(1, x.shape[0] // 64)
    rows = np.ascontiguousarray(x[::step])
    if rows.shape[1] < 2:
        return 0.0
    d = cv2.absdiff(rows[:, 1:], rows[:, :-1])
    if 2 * cv2.countNonZero(d) <= d.size:  # most neighbours equal (a canvas, a clean scan)
        return 0.0
    return _median(histogram(d)) / (0.6745 * np.sqrt(2))


def grainy(gray: np.ndarray) -> bool:
    return min(gray.shape) >= 24 and noise_level(gray) > 3.0


def could_be_paper(gray: np.ndarray) -> bool:
    """Large enough to be a photo or a scan of paper, with paper around a digit and light across it
    (64 px or more on its short side), and not a bitmap. A 28x28 crop is not (a Fashion-MNIST garment)."""
    return min(gray.shape) >= 64 and not two_level(gray)


def _median(hist: np.ndarray) -> float:
    c = np.cumsum(hist)
    return float(np.searchsorted(c, c[-1] / 2))


def stretch_contrast(x: np.ndarray, min_contrast: float) -> np.ndarray:
    """Ink-bright uint8 -> uint8 ink ramp from just above the paper's noise to the typical ink value:
    texture and JPEG ringing go to 0, the stroke core saturates at 255 as in MNIST, and the
    anti-aliased edge keeps its greys. Paper is the class below Otsu's threshold (the ink may be the
    larger class); ink must also clear the paper's noise, which matters when the ink is a few
    percent of a grainy photo and Otsu's threshold falls inside the grain. All from one histogram."""
    hist = histogram(x)
    t = otsu(x, hist)
    if hist[: t + 1].sum() == 0 or hist[t + 1:].sum() == 0:
        raise NoDigitError("no digit: the image is blank")
    # paper: the histogram's peak below Otsu's threshold; its grain: from the peak's dark side only
    # (the bright side mixes with ink, and Otsu may cut through the grain when ink is scarce)
    smooth = np.convolve(hist, [1, 2, 3, 2, 1], mode="same")  # peaked: a one-level paper stays put
    paper = int(np.argmax(smooth[: t + 1]))
    dark_side = np.cumsum(hist[: paper + 1])
    noise = float(paper - np.searchsorted(dark_side, 0.3173 * dark_side[-1]))
    cut = max(t, int(paper + 4 * noise))
    above = hist.copy()
    above[: cut + 1] = 0
    if above.sum() == 0:
        raise NoDigitError("no digit: the image is blank")
    top = _median(above)
    if top - paper < max(255 * min_contrast, 6 * noise):
        raise NoDigitError("no digit: nothing stands out from the background")
    floor = paper + max(4 * noise, 5.0)
    low = max(floor, paper + 0.15 * (top - paper))
    lut = np.clip((np.arange(256) - low) / max(top - low, 1.0), 0.0, 1.0) * 255 + 0.5
    return cv2.LUT(x, lut.astype(np.uint8))


def blob_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """8-connected ink blobs: (labels, stats [n, 5] as OpenCV gives them, row 0 the paper). With the
    statistics, OpenCV's block-based labelling (BBDT) takes half the time of its default here."""
    _, labels, stats, _ = cv2.connectedComponentsWithStatsWithAlgorithm(ink_mask(x), 8, cv2.CV_32S, cv2.CCL_BBDT)
    return labels, stats


def ink_mask(x: np.ndarray) -> np.ndarray:
    return cv2.threshold(x, 0, 1, cv2.THRESH_BINARY)[1].astype(np.uint8, copy=False) if x.dtype == np.uint8 \
        else (x > 0).view(np.uint8)


def remove_specks(x: np.ndarray, fraction: float = 0.02) -> np.ndarray:
    """Zero connected ink blobs holding less than `fraction` of the largest blob's ink (noise, dust)."""
    return pick_digit(x, fraction, reach=None)[0]


def pick_digit(x: np.ndarray, fraction: float = 0.02, reach: float | None = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """(x without specks as remove_specks makes it, and the largest blob with the blobs near it alone,
    within `reach` of its size: one digit in a picture that also holds a smudge, a shadow's edge or a
    stray mark elsewhere). One labelling for both; reach None: the second is not made (None)."""
    # labels alone first: OpenCV's labelling is several times faster without the statistics, and a
    # clean image (one blob) needs nothing more; after that, only the ink pixels are looked at
    mask = ink_mask(x)
    n, labels = cv2.connectedComponents(mask, connectivity=8)
    if n <= 2:
        return x, (None if reach is None else x)
    at = np.flatnonzero(mask)
    label = labels.ravel()[at]
    mass = np.bincount(label, weights=x.ravel()[at], minlength=n)
    keep = mass >= fraction * mass.max()
    keep[0] = False
    picture = zero_blobs(x, at, label, keep)
    if reach is None:
        return picture, None
    keep &= near_main(blob_boxes(at, label, x.shape[1], keep), np.where(keep, mass, 0.0), reach)
    return picture, zero_blobs(x, at, label, keep)


def zero_blobs(x: np.ndarray, at: np.ndarray, label: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """A copy of x without the blobs not kept (at: the ink pixels' flat indices, label: their blobs)."""
    out = x.copy()
    out.ravel()[at[~keep[label]]] = 0
    return out


def blob_boxes(at: np.ndarray, label: np.ndarray, width: int, wanted: np.ndarray) -> np.ndarray:
    """[n, 4] (left, top, width, height) of the wanted blobs (others 0), from their pixels' flat
    indices `at` and labels."""
    boxes = np.zeros((len(wanted), 4), np.int64)
    order = np.argsort(label, kind="stable")  # each blob's pixels together
    at, label = at[order], label[order]
    ids = np.arange(len(wanted))
    starts, ends = np.searchsorted(label, ids), np.searchsorted(label, ids, "right")
    rows, cols = np.divmod(at, width)
    for i in np.flatnonzero(wanted):
        r, c = rows[starts[i]:ends[i]], cols[starts[i]:ends[i]]
        boxes[i] = c.min(), r.min(), c.max() + 1 - c.min(), r.max() + 1 - r.min()
    return boxes


def near_main(stats: np.ndarray, mass: np.ndarray, reach: float) -> np.ndarray:
    """Which blobs belong to the largest one's cluster: grown from it, a blob joins when its box comes
    within `reach` x the cluster's size."""
    main = int(np.argmax(mass))
    left, top, w, h = (int(v) for v in stats[main, :4])
    right, bottom = left + w, top + h
    keep = np.zeros(len(mass), bool)
    keep[main] = True
    x0, t, bw, bh = (stats[:, k] for k in range(4))
    candidates = mass > 0
    while True:
        margin = reach * max(bottom - top, right - left)
        near = candidates & ~keep & (t < bottom + margin) & (t + bh > top - margin) \
            & (x0 < right + margin) & (x0 + bw > left - margin)
        if not near.any():
            return keep
        keep |= near  # growing only ever adds blobs, so adding all that are near at once ends the same
        top, bottom = min(top, int(t[near].min())), max(bottom, int((t + bh)[near].max()))
        left, right = min(left, int(x0[near].min())), max(right, int((x0 + bw)[near].max()))


# ---------------------------------------------------------------------------- one digit -> 28x28
def bounding_box(x: np.ndarray, level: float = 0.0) -> tuple[int, int, int, int]:
    """(top, left, bottom, right), exclusive end, of the pixels above `level`."""
    if x.dtype == np.uint8 and level == 0:
        left, top, w, h = cv2.boundingRect(x)  # of the non-zero pixels
        if w == 0:
            raise NoDigitError("no digit: no ink left")
        return top, left, top + h, left + w
    mask = x > level
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise NoDigitError("no digit: no ink left")
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def stroke_width(x: np.ndarray, level: float = 0.5) -> float:
    """Average stroke width in pixels: 2 * area / perimeter of the ink (a long stroke's width)."""
    m = (x > level).view(np.int8)
    perimeter = np.count_nonzero(np.diff(m, axis=0)) + np.count_nonzero(np.diff(m, axis=1))
    return 2.0 * float(np.count_nonzero(m)) / max(float(perimeter), 1.0)


def resize(x: np.ndarray, w: int, h: int) -> np.ndarray:
    shrink = w < x.shape[1] or h < x.shape[0]
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def reduce_digit(x: np.ndarray, side: int = STROKE_WORK) -> np.ndarray:
    """A large crop -> longest side `side`, hairlines kept: a stroke much thinner than the reduction
    factor is widened first, so that it is still a line, not a faint trace, once reduced."""
    h, w = x.shape
    f = max(h, w) / side
    if f <= 1:
        return x
    width = stroke_width(x, 0.3)
    if 0 < width < f:
        k = int(round(f - width)) | 1
        x = cv2.dilate(x, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    out = resize(x, max(1, round(w / f)), max(1, round(h / f)))
    peak = float(out.max())
    return out / peak if peak > 0 else out


def block_size(x: np.ndarray) -> int:
    """k when x is a smaller image blown up k times blocky (nearest neighbour), else 1. The crop is
    cut at the ink's edge, which in such an image is a block's edge, so the blocks start at (0, 0)."""
    h, w = x.shape
    for k in range(min(h, w) // 4, 1, -1):  # the largest factor first: 4x-blocky is 2x-blocky too
        if h % k == 0 and w % k == 0 and np.array_equal(
                cv2.resize(x[::k, ::k], (w, h), interpolation=cv2.INTER_NEAREST), x):
            return k
    return 1


def smooth_bitmap(x: np.ndarray, fine: int = 4, small: int = 40) -> np.ndarray:
    """A 1-bit crop (uint8) -> smooth edges: a blocky upscale is taken back to its own pixels, and a
    small bitmap is blown up `fine` times with cubic interpolation, so that its staircase edges become
    the smooth outline they sampled and adjust_stroke can thin it by fractions of its pixels."""
    k = block_size(x)
    if k > 1:
        x = x[::k, ::k]
    if max(x.shape) >= small:
        return x
    return cv2.resize(x, (x.shape[1] * fine, x.shape[0] * fine), interpolation=cv2.INTER_CUBIC)


def adjust_stroke(x: np.ndarray, box: int, erode_share: float = 0.5) -> np.ndarray:
    """Dilate thin pen lines / erode marker strokes so that, once the digit is scaled to `box`,
    the stroke is about as wide as MNIST's. Erosion takes at most `erode_share` of the average
    stroke's width, so that the thinner strokes of a digit are not eroded away."""
    scale = box / max(x.shape)
    own = stroke_width(x)
    width = own * scale
    if 0.7 * MNIST_STROKE <= width <= 1.6 * MNIST_STROKE or width == 0:
        return x
    k = int(round(abs(MNIST_STROKE - width) / scale))
    if width < MNIST_STROKE:
        x = cv2.copyMakeBorder(x, k, k, k, k, cv2.BORDER_CONSTANT, value=0)
        return cv2.dilate(x, np.ones((k + 1, k + 1), np.uint8))
    k = min(k, int(own * erode_share))  # never erode a stroke away
    return cv2.erode(x, np.ones((k + 1, k + 1), np.uint8)) if k >= 1 else x


def deskew(images: np.ndarray) -> np.ndarray:
    """Shears each image of [N, H, W] so its pixel covariance has no row-column term, centred on its
    centre of mass; float32, same shape. The classic MNIST deskewing (as in LeCun's table), bilinear:
    the lab's knn-fast and mlp-sklearn-tuned use it on whole datasets, the reader on one digit."""
    out = np.empty(images.shape, np.float32)
    h, w = images.shape[1:]
    for i, image in enumerate(np.asarray(images, np.float32)):
        m = cv2.moments(image)
        if m["m00"] <= 0:
            out[i] = image
            continue
        cy, cx = m["m01"] / m["m00"], m["m10"] / m["m00"]
        alpha = m["mu11"] / m["mu02"] if m["mu02"] > 1e-6 else 0.0
        # output (row r, col c) samples the input at (r - h/2 + cy, c - w/2 + cx + alpha (r - h/2))
        matrix = np.float32([[1, alpha, cx - w / 2 - alpha * h / 2], [0, 1, cy - h / 2]])
        out[i] = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
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
        out = resize(x, max(1, round(w * scale)), max(1, round(h * scale)))
    else:
        out = resize(x, box, box)
    out = np.clip(out, 0, 1)
    peak = float(out.max())
    return out / peak if peak > 0 else out  # thin strokes fade when scaled down: restore the peak


def paste_centered(x: np.ndarray, center_of_mass: bool = True, size: int = 28) -> np.ndarray:
    """Paste into size x size with the centre of mass (or the box centre) at pixel (14, 14)."""
    h, w = x.shape
    m = cv2.moments(x) if center_of_mass else {"m00": 0.0}
    if m["m00"] > 0:
        r, c = m["m01"] / m["m00"], m["m10"] / m["m00"]
        top, left = round(size / 2 - r), round(size / 2 - c)
    else:
        top, left = (size - h) // 2, (size - w) // 2
    # keep the whole digit inside the frame even when its mass is lopsided
    top, left = min(max(top, 0), size - h), min(max(left, 0), size - w)
    out = np.zeros((size, size), np.float32)
    out[top:top + h, left:left + w] = x
    return out


def normalize_digit(x: np.ndarray, config: PreprocessConfig | None = None,
                    box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    """An ink map holding one digit (uint8 0-255 or float 0-1) -> uint8 [28, 28], MNIST-style.
    box: its bounding_box, when the caller has it already."""
    c = config or PreprocessConfig()
    if c.crop:
        top, left, bottom, right = box or bounding_box(x)
        x = x[top:bottom, left:right]
    if x.dtype == np.uint8 and two_level(x):
        x = smooth_bitmap(x)
    if c.aspect != 1.0:
        x = cv2.resize(x, (max(1, round(x.shape[1] * c.aspect)), x.shape[0]), interpolation=cv2.INTER_AREA)
    x = x.astype(np.float32) * np.float32(1 / 255) if x.dtype == np.uint8 else np.asarray(x, np.float32)
    x = reduce_digit(x)
    if c.stroke_width:
        x = adjust_stroke(x, c.box, c.erode_share)
    if c.deskew:
        x = deskew_digit(x)
        top, left, bottom, right = bounding_box(x, 0.05)
        x = x[top:bottom, left:right]
    x = scale_to_box(x, c.box, c.keep_aspect)
    return (paste_centered(x, c.center_of_mass) * 255 + 0.5).astype(np.uint8)


def resize_only(image) -> np.ndarray:
    """The naive baseline: grayscale, squash to 28x28, nothing else."""
    loaded = load(image)
    gray = loaded.gray if loaded.alpha is None else composite_alpha(loaded.gray, loaded.alpha)
    return cv2.resize(gray, (28, 28), interpolation=cv2.INTER_AREA)
