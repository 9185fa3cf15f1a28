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
- slant and elastic distortion: other writers' hands.

Only MNIST-format data and procedural transforms are used (the project's training-data rule).

    views = realistic_views(train_images, n_views=2, seed=0)   # uint8 [2, N, 28, 28]
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import cv2
import numpy as np

from digitlab.errors import ImageError
from digitlab.reader import preprocess

UPSCALE = 4  # work at 112x112 so that thickness and pen changes are smooth


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


def realistic_variant(image28: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One MNIST digit (uint8 [28, 28]) as a real collection might hold it, preprocessed like the reader
    does: uint8 [28, 28]. Falls back to the original if the reader finds no digit in the rendering."""
    ink = upscale(image28.astype(np.float32) / 255)
    if rng.random() < 0.6:
        ink = slant_and_elastic(ink, rng)
    style = rng.random()
    if style < 0.3:
        ink = pen_strokes(ink, rng)
    elif style < 0.6:
        ink = thickness(ink, rng)
    if rng.random() < 0.45:
        ink = frame_filling(ink, rng)
    elif rng.random() < 0.3:
        ink = low_resolution(ink, rng)
    picture = ink if rng.random() < 0.25 else 1 - ink  # mostly dark ink on light paper
    try:
        return preprocess(np.round(picture * 255).astype(np.uint8))
    except ImageError:
        return image28


def _views_chunk(args: tuple[np.ndarray, int, int]) -> np.ndarray:
    images, n_views, seed = args
    rng = np.random.default_rng(seed)
    return np.stack([[realistic_variant(im, rng) for im in images] for _ in range(n_views)])


def realistic_views(images: np.ndarray, n_views: int = 2, seed: int = 0, workers: int | None = None,
                    chunk: int = 2000) -> np.ndarray:
    """uint8 [n_views, N, 28, 28]: n_views realistic renderings of each image, deterministic in `seed`
    (each chunk of images has its own seed, so the result does not depend on `workers`)."""
    jobs = [(images[i:i + chunk], n_views, seed * 100_003 + i) for i in range(0, len(images), chunk)]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(jobs) == 1:
        parts = [_views_chunk(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            parts = list(pool.map(_views_chunk, jobs))
    return np.concatenate(parts, axis=1)
