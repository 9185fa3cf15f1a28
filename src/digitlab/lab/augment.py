"""Realistic views of MNIST training digits: how real handwriting collections differ from MNIST.

Real digits reach the model through the reader's preprocessing, so a training view is made the same
way: one MNIST training digit is rendered as a real collection would store it, and then passed
through `digitlab.reader.preprocess`. The model thus trains on exactly what the reader will show it
for such an input. The ways real collections differ, each one function here:

- frame-filling size normalization: cropped to the ink and squashed to a square, aspect lost;
- low resolution: stored at 8-20 px, then scaled up blocky (nearest) or smooth;
- binarization: 1-bit, at a random threshold;
- stroke thickness: dilated or eroded at several scales;
- pen strokes: constant width with round caps, the way a canvas or a tablet draws;
- slant and elastic distortion: other writers' hands;
- where people write (`on_form`): in a printed box, on ruled or squared paper, on a printed line,
  photographed or scanned (`digitlab.testing.paper`, which draws the suite's forms from MNIST test
  digits). The reader takes the printed lines out; the model learns from what it leaves: remnants of
  lines, a stroke bridged across one, a frame's corner.

`not_one_digit` makes the opposite: what the reader shows the model when it cuts a row of digits in
the wrong place (a strip of one digit, the joint of two) or does not cut it (two digits as one). The
model learns to spread its probability over all ten labels for those (outlier exposure), so a wrong
cut or a missed one reads with low confidence and the right one wins.

Only MNIST-format data and procedural transforms are used (the project's training-data rule).

    views = realistic_views(train_images, n_views=2, seed=0)   # uint8 [2, N, 28, 28]
    others = not_one_digit(train_images, train_labels, 6000, n_views=3, seed=0)   # uint8 [3, 6000, 28, 28]
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

from digitlab.errors import ImageError
from digitlab.reader import preprocess
from digitlab.reader.preprocess import normalize_digit
from digitlab.testing import paper

UPSCALE = 4  # work at 112x112 so that thickness and pen changes are smooth
NOT_ONE_DIGIT = -1  # the label of a training image that is not one digit: its target is "any of ten"


def crop_to_ink(ink: np.ndarray, level: float = 0.1) -> np.ndarray:
    rows, cols = np.flatnonzero(ink.max(1) > level), np.flatnonzero(ink.max(0) > level)
    if not rows.size:
        return ink
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def upscale(ink: np.ndarray, factor: int = UPSCALE) -> np.ndarray:
    return cv2.resize(ink, None, fx=factor, fy=factor, interpolation=cv2.INTER_CUBIC).clip(0, 1)


def frame_filling(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Cropped to the ink and resized to a small square (aspect lost), maybe 1-bit, scaled back up."""
    size = int(rng.integers(8, 21))
    small = cv2.resize(crop_to_ink(ink), (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        small = (small > rng.uniform(0.25, 0.6)).astype(np.float32)
    mode = cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_LINEAR
    factor = int(rng.integers(3, 9))
    return cv2.resize(small, None, fx=factor, fy=factor, interpolation=mode).clip(0, 1)


def low_resolution(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The whole picture stored small (margins kept), then scaled up."""
    size = int(rng.integers(10, 21))
    h, w = ink.shape
    small = cv2.resize(ink, (max(4, size * w // max(h, w)), max(4, size * h // max(h, w))),
                       interpolation=cv2.INTER_AREA)
    if rng.random() < 0.4:
        small = (small > rng.uniform(0.3, 0.6)).astype(np.float32)
    mode = cv2.INTER_NEAREST if rng.random() < 0.5 else cv2.INTER_CUBIC
    return cv2.resize(small, (w, h), interpolation=mode).clip(0, 1)


def disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def thickness(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Thicker (marker) or thinner (fine pen) strokes: grey dilation or erosion by a random disk."""
    radius = int(rng.integers(1, 3 * ink.shape[0] // 56 + 2))
    if rng.random() < 0.6:
        return cv2.dilate(ink, disk(radius))
    thin = cv2.erode(ink, disk(max(1, radius // 2)))
    return thin if thin.max() > 0.3 else ink  # never erase the digit


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Morphological skeleton (Lantuejoul): the union over n of erode^n(mask) minus its opening."""
    mask, out, kernel = mask.astype(np.uint8), np.zeros(mask.shape, np.uint8), disk(1)
    while mask.any():
        eroded = cv2.erode(mask, kernel)
        out |= mask & ~cv2.dilate(eroded, kernel)
        mask = eroded
    return out


def pen_strokes(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Redrawn along its centre line with a round pen of constant width, anti-aliased."""
    centre = skeleton(ink > 0.5)
    if not centre.any():
        return ink
    radius = float(rng.uniform(0.02, 0.09)) * ink.shape[0]
    distance = cv2.distanceTransform((1 - centre).astype(np.uint8), cv2.DIST_L2, 5)
    return np.clip(radius + 0.5 - distance, 0, 1).astype(np.float32)


def slant_and_elastic(ink: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A writer's slant (shear) and a smooth random displacement field (Simard et al. 2003)."""
    h, w = ink.shape
    shear = rng.uniform(-0.35, 0.35)
    pad = int(abs(shear) * h / 2) + 2
    ink = cv2.copyMakeBorder(ink, 0, 0, pad, pad, cv2.BORDER_CONSTANT, value=0)
    w += 2 * pad
    affine = np.float32([[1, shear, -shear * h / 2], [0, 1, 0]])
    ink = cv2.warpAffine(ink, affine, (w, h), flags=cv2.INTER_LINEAR)
    if rng.random() < 0.7:
        sigma, alpha = 0.12 * h, rng.uniform(0.02, 0.06) * h
        dx = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma)
        dy = cv2.GaussianBlur(rng.uniform(-1, 1, (h, w)).astype(np.float32), (0, 0), sigma)
        scale = alpha / (max(np.abs(dx).max(), np.abs(dy).max()) + 1e-6)
        xx, yy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        ink = cv2.remap(ink, xx + dx * scale, yy + dy * scale, cv2.INTER_LINEAR)
    return ink


def styled_ink(image28: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One MNIST digit as float ink at 112x112 in another writer's hand: slant, elasticity, pen or
    thickness (the stroke changes of `realistic_variant`, without the ways of storing it)."""
    ink = upscale(image28.astype(np.float32) / 255)
    if rng.random() < 0.6:
        ink = slant_and_elastic(ink, rng)
    style = rng.random()
    if style < 0.3:
        return pen_strokes(ink, rng)
    return thickness(ink, rng) if style < 0.6 else ink


FORM_KINDS = ("box", "box", "ruled", "squared", "underline")  # a comb's cell is a box, read as one


def on_form(image28: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One MNIST digit in another writer's hand, 28-110 px tall, written in a printed box, on ruled or
    squared paper or on a printed line, scanned or photographed, and read back by the reader (which
    removes the printed lines): uint8 [28, 28], or the original where the reader finds no digit."""
    ink = crop_to_ink(styled_ink(image28, rng))
    height = int(rng.integers(28, 111))
    ink = cv2.resize(ink, (max(2, round(ink.shape[1] * height / ink.shape[0])), height), interpolation=cv2.INTER_AREA)
    page = paper.on_paper([ink], str(rng.choice(FORM_KINDS)), rng)
    try:
        return preprocess(paper.photograph(page, rng))
    except ImageError:
        return image28


def realistic_variant(image28: np.ndarray, rng: np.random.Generator, forms: float = 0.0) -> np.ndarray:
    """One MNIST digit (uint8 [28, 28]) as a real collection might hold it, preprocessed like the reader
    does: uint8 [28, 28]; a `forms` share of them written on forms (`on_form`). Falls back to the
    original if the reader finds no digit in the rendering."""
    if forms and rng.random() < forms:
        return on_form(image28, rng)
    ink = styled_ink(image28, rng)
    if rng.random() < 0.45:
        ink = frame_filling(ink, rng)
    elif rng.random() < 0.3:
        ink = low_resolution(ink, rng)
    picture = ink if rng.random() < 0.25 else 1 - ink  # mostly dark ink on light paper
    try:
        return preprocess(np.round(picture * 255).astype(np.uint8))
    except ImageError:
        return image28


def side_by_side(left: np.ndarray, right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two ink crops in a row, touching or nearly (from 25% of the narrower one's width overlapping to a
    6% gap), one a little lower than the other: digits written too close."""
    left, right = crop_to_ink(left), crop_to_ink(right)
    x = left.shape[1] - int(min(left.shape[1], right.shape[1]) * rng.uniform(-0.06, 0.25))
    dy = int(rng.integers(-8, 9))  # how much lower the right one sits
    top_left, top_right = max(0, -dy), max(0, dy)
    row = np.zeros((max(top_left + left.shape[0], top_right + right.shape[0]), x + right.shape[1]), np.float32)
    row[top_left:top_left + left.shape[0], :left.shape[1]] = left
    region = row[top_right:top_right + right.shape[0], x:]
    np.maximum(region, right, out=region)
    return row


def straight(ink: np.ndarray) -> bool:
    """Whether the ink is one straight stroke, as a 1 is: its centre line spreads across its main axis
    less than a tenth as much as along it (the side of a 0, cut off, spreads about a fifth)."""
    rows, cols = np.nonzero(skeleton(ink > 0.5))
    if len(rows) < 3:
        return True
    spread = np.sqrt(np.linalg.eigvalsh(np.cov(np.stack([rows, cols]).astype(np.float64))).clip(0))
    return spread[0] < 0.1 * spread[1]


def not_one_digit_ink(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ink that the reader may cut out of a row of digits but that is not one digit: a two-digit
    blob (a missed cut), a strip of a wide digit (a cut too far in), or the joint between two digits
    (a cut in the middle of each). A strip that is one straight stroke is a 1, so it is not used."""
    kind = rng.random()
    a, b = (styled_ink(images[i], rng) for i in rng.integers(len(images), size=2))
    if kind < 0.4:
        return side_by_side(a, b, rng)
    if kind < 0.7:
        wide = np.flatnonzero(labels != 1)
        ink = crop_to_ink(styled_ink(images[wide[rng.integers(len(wide))]], rng))
        w = ink.shape[1]
        if w < 0.5 * ink.shape[0]:  # too slim to cut: two digits instead
            return side_by_side(ink, b, rng)
        strip = max(2, int(w * rng.uniform(0.15, 0.45)))
        piece = ink[:, :strip] if rng.random() < 0.5 else ink[:, w - strip:]
        return side_by_side(a, b, rng) if straight(piece) else piece
    pair = side_by_side(a, b, rng)
    wa = crop_to_ink(a).shape[1]
    start = int(wa * rng.uniform(0.35, 0.65))
    end = wa + int(crop_to_ink(b).shape[1] * rng.uniform(0.35, 0.65))
    return pair[:, start:max(end, start + 2)]


def _others_chunk(args: tuple[np.ndarray, np.ndarray, int, int, int]) -> np.ndarray:
    images, labels, n, n_views, seed = args
    rng = np.random.default_rng(seed)
    out = np.empty((n_views, n, 28, 28), np.uint8)
    for v in range(n_views):
        for i in range(n):
            ink = crop_to_ink(not_one_digit_ink(images, labels, rng))
            out[v, i] = normalize_digit(ink) if ink.max() > 0.3 else 0
    return out


def not_one_digit(images: np.ndarray, labels: np.ndarray, n: int, n_views: int = 1, seed: int = 0,
                  workers: int | None = None, chunk: int = 2000) -> np.ndarray:
    """uint8 [n_views, n, 28, 28]: images that are not one digit (`not_one_digit_ink`), made from
    `images` (MNIST training digits) and normalized as the reader normalizes a piece of a row;
    deterministic in `seed`."""
    jobs = [(images, labels, min(chunk, n - i), n_views, seed * 100_003 + 7 + i) for i in range(0, n, chunk)]
    if not jobs:
        return np.zeros((n_views, 0, 28, 28), np.uint8)
    return np.concatenate(_run(_others_chunk, jobs, workers), axis=1)


def with_not_one_digit(images: np.ndarray, labels: np.ndarray, share: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training images (uint8 [N, 28, 28], or [views, N, 28, 28]: several renderings of each) and their
    labels, followed by `share` x N images that are not one digit (one rendering per view), labelled
    NOT_ONE_DIGIT. Made from the digits' own images."""
    views = images if images.ndim == 4 else images[None]
    others = not_one_digit(views[0], labels, round(share * len(labels)), len(views), seed=seed)
    both = np.concatenate([views, others], axis=1)
    return (both if images.ndim == 4 else both[0]), np.concatenate([labels, np.full(others.shape[1], NOT_ONE_DIGIT)])


def _run(fn, jobs: list, workers: int | None) -> list:
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) == 1:
        return [fn(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(fn, jobs))


def _views_chunk(args: tuple[np.ndarray, int, int, float]) -> np.ndarray:
    images, n_views, seed, forms = args
    rng = np.random.default_rng(seed)
    return np.stack([[realistic_variant(im, rng, forms) for im in images] for _ in range(n_views)])


def realistic_views(images: np.ndarray, n_views: int = 2, seed: int = 0, workers: int | None = None,
                    chunk: int = 2000, forms: float = 0.0) -> np.ndarray:
    """uint8 [n_views, N, 28, 28]: n_views realistic renderings of each image, a `forms` share of them
    written on forms, deterministic in `seed` (each chunk of images has its own seed, so the result
    does not depend on `workers`)."""
    jobs = [(images[i:i + chunk], n_views, seed * 100_003 + i, forms) for i in range(0, len(images), chunk)]
    return np.concatenate(_run(_views_chunk, jobs, workers), axis=1)
