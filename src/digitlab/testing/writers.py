"""Simulated writers: MNIST digits redrawn with one person's consistent style, for fine-tuning tests.

A writer has a fixed slant, aspect, stroke width and rotation, a fixed smooth distortion of the page
(the same wobble in every digit they write) and drawing habits: a crossed 7, a slashed 0, a 1 with
a flag and a foot. Every digit of theirs is an MNIST digit put through that style at 4x resolution,
the habits drawn procedurally as extra strokes, then brought back to 28x28 by the reader's own
`normalize_digit` (what `digitlab predict` would show the model). No fonts are involved.

    writer = WRITERS[0]
    styled = writer.apply(images, labels)   # uint8 [N, 28, 28], the reader's view
    ink = writer.ink(image, label)          # float [112, 112] ink map, 0-1, before normalizing
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from digitlab.reader.preprocess import normalize_digit

SCALE = 4  # work at 112x112: strokes can be thickened and drawn in steps finer than an MNIST pixel


@dataclass(frozen=True)
class Writer:
    name: str
    slant: float = 0.0  # horizontal shear: > 0 leans right (x += slant * height above the centre)
    aspect: float = 1.0  # width factor: < 1 narrow, > 1 wide
    stroke: int = 0  # pixels (at 112x112) added to (> 0) or taken from (< 0) each side of a stroke
    rotation: float = 0.0  # degrees, counter-clockwise
    wobble: float = 0.0  # amplitude in pixels (at 112x112) of the writer's fixed page distortion
    habits: tuple[str, ...] = ()  # "crossed-7", "slashed-0", "flag-1"
    seed: int = 0

    def ink(self, image: np.ndarray, label: int) -> np.ndarray:
        """One MNIST digit (uint8 28x28) in this writer's hand: a float ink map at 112x112."""
        x = ndimage.zoom(image.astype(np.float32) / 255.0, SCALE, order=1)
        x = np.pad(x, 24)  # room for wide, slanted and rotated digits: 160x160
        if self.stroke > 0:
            x = ndimage.grey_dilation(x, footprint=_disk(self.stroke))
        elif self.stroke < 0:
            x = ndimage.grey_erosion(x, footprint=_disk(-self.stroke))
        x = _draw_habits(x, label, self.habits)
        return np.clip(self._warp(x), 0.0, 1.0)

    def apply(self, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Many digits, styled and normalized the way the reader normalizes a picture of one digit."""
        return np.stack([normalize_digit(self.ink(im, int(lb))) for im, lb in zip(images, labels, strict=True)])

    def _warp(self, x: np.ndarray) -> np.ndarray:
        """Slant, aspect and rotation about the centre, then the fixed wobble field, in one resampling."""
        h, w = x.shape
        rows, cols = np.mgrid[:h, :w].astype(np.float32)
        cy, cx = (h - 1) / 2, (w - 1) / 2
        r, c = rows - cy, cols - cx
        # output (r, c) reads the input at the inverse transform: un-rotate, un-shear, un-stretch
        a = math.radians(self.rotation)
        rr = math.cos(a) * r - math.sin(a) * c
        cc = math.sin(a) * r + math.cos(a) * c
        cc = (cc + self.slant * rr) / self.aspect
        if self.wobble:
            dy, dx = self._wobble_field((h, w))
            rr, cc = rr + dy, cc + dx
        return ndimage.map_coordinates(x, [rr + cy, cc + cx], order=1, mode="constant")

    def _wobble_field(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        fields = []
        for _ in range(2):
            f = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 14)
            fields.append(f / (np.abs(f).max() + 1e-9) * self.wobble)
        return fields[0], fields[1]


def _disk(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    return (r[:, None] ** 2 + r[None, :] ** 2) <= radius**2


def _line(x: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], width: float) -> None:
    """Draws an anti-aliased straight stroke from p0 to p1 ((row, col) pixels) into x, in place."""
    rows, cols = np.mgrid[: x.shape[0], : x.shape[1]].astype(np.float32)
    (r0, c0), (r1, c1) = p0, p1
    dr, dc = r1 - r0, c1 - c0
    t = np.clip(((rows - r0) * dr + (cols - c0) * dc) / max(dr * dr + dc * dc, 1e-9), 0, 1)
    dist = np.hypot(rows - (r0 + t * dr), cols - (c0 + t * dc))
    np.maximum(x, np.clip(width / 2 + 0.5 - dist, 0, 1), out=x)


def _draw_habits(x: np.ndarray, label: int, habits: tuple[str, ...]) -> np.ndarray:
    """Extra strokes some people always add, placed relative to the digit's ink box."""
    wanted = {"crossed-7": 7, "slashed-0": 0, "flag-1": 1}
    if not any(wanted.get(h) == label for h in habits):
        return x
    rows, cols = np.flatnonzero(x.max(axis=1) > 0.5), np.flatnonzero(x.max(axis=0) > 0.5)
    if rows.size == 0:
        return x
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
    height, mid = bottom - top, (left + right) / 2
    width = 2.2 * SCALE
    x = x.copy()
    if "crossed-7" in habits and label == 7:  # a bar through the middle of the stem
        row = top + 0.55 * height
        _line(x, (row, mid - 0.28 * height), (row, mid + 0.22 * height), width)
    if "slashed-0" in habits and label == 0:
        _line(x, (bottom - 0.05 * height, left + 0.1 * (right - left)),
              (top + 0.05 * height, right - 0.1 * (right - left)), width)
    if "flag-1" in habits and label == 1:  # a flag from the top and a foot under the stroke
        _line(x, (top, mid), (top + 0.3 * height, mid - 0.3 * height), width)
        _line(x, (bottom, mid - 0.25 * height), (bottom, mid + 0.25 * height), width)
    return x


# Six writers, each a different hand. The figures in BENCHMARKS.md are for exactly these.
WRITERS: tuple[Writer, ...] = (
    Writer("right-leaning, crossed 7s", slant=0.55, aspect=0.85, stroke=2, habits=("crossed-7",), seed=1),
    Writer("backhand, slashed 0s", slant=-0.5, rotation=-6, habits=("slashed-0",), seed=2),
    Writer("wide marker, flagged 1s", aspect=1.6, stroke=5, habits=("flag-1",), seed=3),
    Writer("narrow, thin pen, tilted", aspect=0.5, stroke=-1, rotation=14, seed=4),
    Writer("wobbly, crossed 7s and flagged 1s", slant=0.25, wobble=9.0, habits=("crossed-7", "flag-1"), seed=5),
    Writer("squat and wobbly, slashed 0s", aspect=1.35, slant=-0.3, wobble=7.0, habits=("slashed-0",), seed=6),
)


def writer_split(labels: np.ndarray, writer_index: int, train_per_class: int = 20, held_per_class: int = 50,
                 n_writers: int = len(WRITERS)) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint MNIST test indices for each writer: (training pool, held-out), per class in order, so
    the first k of each class's pool are that writer's k examples."""
    per = train_per_class + held_per_class
    rng = np.random.default_rng(1234)
    train, held = [], []
    for d in range(10):
        pool = rng.permutation(np.flatnonzero(labels == d))
        if len(pool) < per * n_writers:
            raise ValueError(f"not enough test images of digit {d} for {n_writers} writers")
        mine = pool[writer_index * per:(writer_index + 1) * per]
        train.append(mine[:train_per_class])
        held.append(mine[train_per_class:])
    return np.stack(train, 1).ravel(), np.concatenate(held)  # train: k-th example of every class together


def write_folder(root, writer: Writer, images: np.ndarray, labels: np.ndarray) -> None:
    """The writer's digits as files people would have: dark ink on white paper, 160-px PNGs in root/<digit>/."""
    from pathlib import Path

    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = Path(root) / str(int(label)) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.round((1 - writer.ink(image, int(label))) * 255).astype(np.uint8)).save(path)


if __name__ == "__main__":  # python -m digitlab.testing.writers DIR [WRITER] [PER_DIGIT]: an example folder
    import sys

    from digitlab import data

    x, y = data.load("mnist", "test")
    index = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    pool, _ = writer_split(y, index)
    n = 10 * (int(sys.argv[3]) if len(sys.argv) > 3 else 10)
    write_folder(sys.argv[1], WRITERS[index], x[pool[:n]], y[pool[:n]])
    print(f"{n} digits by writer {index} ({WRITERS[index].name}) -> {sys.argv[1]}")
