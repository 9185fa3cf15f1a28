"""Simulated writers: MNIST digits redrawn with one person's consistent style, for fine-tuning tests.

A writer has a fixed slant, aspect, stroke width and rotation, a fixed smooth distortion of the page
(the same wobble in every digit they write) and drawing habits: a crossed 7, a slashed 0, a 1 with
a flag and a foot (a serifed 1), a 4 closed at the top, loops of 0, 6 and 9 left open. Every digit
of theirs is an MNIST digit put through that style at 4x resolution, the habits drawn (or erased)
procedurally, then brought back to 28x28 by the reader's own `normalize_digit` (what `digitlab
predict` would show the model). No fonts are involved.

`WRITERS` are six mild hands (the bundled model reads them at about 97%); `STRONG_WRITERS` are ten
hands far from MNIST's (thick, thin, narrow, wide, slanted either way, open or closed loops, serifed
1s, crossed 7s, and combinations), the ones `digitlab finetune` is measured on.

    writer = STRONG_WRITERS[0]
    styled = writer.apply(images, labels)   # uint8 [N, 28, 28], the reader's view
    ink = writer.ink(image, label)          # float [160, 160] ink map, 0-1, before normalizing
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
    habits: tuple[str, ...] = ()  # "crossed-7", "slashed-0", "flag-1", "closed-4", "open-loops"
    seed: int = 0
    habit_width: float = 2.2  # MNIST pixels: the width of the strokes a habit adds (the writer's pen)

    def ink(self, image: np.ndarray, label: int) -> np.ndarray:
        """One MNIST digit (uint8 28x28) in this writer's hand: a float ink map at 112x112."""
        x = ndimage.zoom(image.astype(np.float32) / 255.0, SCALE, order=1)
        x = np.pad(x, 24)  # room for wide, slanted and rotated digits: 160x160
        if self.stroke > 0:
            x = ndimage.grey_dilation(x, footprint=_disk(self.stroke))
        elif self.stroke < 0:
            x = ndimage.grey_erosion(x, footprint=_disk(-self.stroke))
        x = _draw_habits(x, label, self.habits, self.habit_width * SCALE)
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


def _draw_habits(x: np.ndarray, label: int, habits: tuple[str, ...], width: float = 2.2 * SCALE) -> np.ndarray:
    """Extra strokes some people always add (or leave out), placed relative to the digit's ink box."""
    wanted = {"crossed-7": (7,), "slashed-0": (0,), "flag-1": (1,), "closed-4": (4,), "open-loops": (0, 6, 9)}
    if not any(label in wanted.get(h, ()) for h in habits):
        return x
    rows, cols = np.flatnonzero(x.max(axis=1) > 0.5), np.flatnonzero(x.max(axis=0) > 0.5)
    if rows.size == 0:
        return x
    top, bottom, left, right = rows[0], rows[-1], cols[0], cols[-1]
    height, mid = bottom - top, (left + right) / 2
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
    if "closed-4" in habits and label == 4:
        _close_four(x, top, bottom, left, right, width)
    if "open-loops" in habits and label in (0, 6, 9):
        x = _open_loop(x, label, width)
    return x


def _close_four(x: np.ndarray, top: int, bottom: int, left: int, right: int, width: float) -> None:
    """A 4 written closed, like a printed one: a stroke from the top of its left arm to the top of its
    stem (the highest ink in the left and right thirds of the upper half), in place."""
    upper = x[top:top + (bottom - top) // 2] > 0.5
    third = max(1, (right - left) // 3)
    ends = []
    for lo, hi in ((left, left + third), (right - third, right + 1)):
        r, c = np.nonzero(upper[:, lo:hi])
        if r.size == 0:
            return
        first = r == r.min()
        ends.append((top + r.min(), lo + c[first].mean()))
    _line(x, ends[0], ends[1], width)


# Where a loop is left open, as an angle from the loop's centre (degrees, counter-clockwise from "right"):
# a 0 at the top, a 6 where its curl comes back up on the right, a 9 where its loop comes down to the stem.
OPENING = {0: 80.0, 6: 40.0, 9: -70.0}


def _open_loop(x: np.ndarray, label: int, width: float) -> np.ndarray:
    """The digit with its loop left open: the ink erased in a gap about `width` wide where the loop's
    stroke crosses a ray from the loop's centre (the largest hole: the upper one of a 9, the lower of a 6)."""
    ink = x > 0.5
    holes, n = ndimage.label(ndimage.binary_fill_holes(ink) & ~ink)
    if n == 0:
        return x
    sizes = ndimage.sum_labels(np.ones_like(x), holes, range(1, n + 1))
    hole = holes == 1 + int(np.argmax(sizes))
    cy, cx = ndimage.center_of_mass(hole)
    radius = math.sqrt(hole.sum() / math.pi)
    a = math.radians(OPENING[label])
    # from inside the loop to just beyond its stroke (a stroke is about `width` wide, thicker pens more)
    reach = radius + 1.5 * width + 2 * SCALE
    gap = np.zeros_like(x)
    _line(gap, (cy - 0.5 * radius * math.sin(a), cx + 0.5 * radius * math.cos(a)),
          (cy - reach * math.sin(a), cx + reach * math.cos(a)), 1.3 * width)
    return x * (1 - gap)


# Six writers, each a different hand. The figures in BENCHMARKS.md are for exactly these.
WRITERS: tuple[Writer, ...] = (
    Writer("right-leaning, crossed 7s", slant=0.55, aspect=0.85, stroke=2, habits=("crossed-7",), seed=1),
    Writer("backhand, slashed 0s", slant=-0.5, rotation=-6, habits=("slashed-0",), seed=2),
    Writer("wide marker, flagged 1s", aspect=1.6, stroke=5, habits=("flag-1",), seed=3),
    Writer("narrow, thin pen, tilted", aspect=0.5, stroke=-1, rotation=14, seed=4),
    Writer("wobbly, crossed 7s and flagged 1s", slant=0.25, wobble=9.0, habits=("crossed-7", "flag-1"), seed=5),
    Writer("squat and wobbly, slashed 0s", aspect=1.35, slant=-0.3, wobble=7.0, habits=("slashed-0",), seed=6),
)

# Ten hands far from MNIST's: the figures for `digitlab finetune` in BENCHMARKS.md are for exactly these.
# stroke 6 at 4x adds 1.5 MNIST pixels to each side of a stroke (MNIST's are 2-3 pixels wide), -2 takes
# half a pixel; aspect 0.45 is a digit less than half as wide as MNIST's, slant 0.8 leans 39 degrees.
STRONG_WRITERS: tuple[Writer, ...] = (
    Writer("thick marker", stroke=10, habit_width=7.0, seed=11),
    Writer("thin pen, very wide", stroke=-2, aspect=2.0, habit_width=1.2, seed=12),
    Writer("very narrow", aspect=0.35, seed=13),
    Writer("steep right slant, crossed 7s", slant=1.0, habits=("crossed-7",), seed=14),
    Writer("steep backhand, serifed 1s", slant=-0.9, rotation=-5, habits=("flag-1",), seed=15),
    Writer("open loops, closed 4s", habits=("open-loops", "closed-4"), stroke=1, seed=16),
    Writer("thick, narrow, slanted right", stroke=7, aspect=0.5, slant=0.75, habits=("crossed-7",), habit_width=5.5,
           seed=17),
    Writer("thin, wide, backhand, open loops", stroke=-2, aspect=1.8, slant=-0.8, habits=("open-loops",),
           habit_width=1.2, seed=18),
    Writer("narrow marker, closed 4s, serifed 1s, crossed 7s", stroke=6, aspect=0.4, rotation=10,
           habits=("closed-4", "flag-1", "crossed-7"), habit_width=5.0, seed=19),
    Writer("wide, wobbly, slashed 0s, open loops", aspect=1.7, slant=0.4, wobble=12.0,
           habits=("slashed-0", "open-loops"), seed=20),
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


def main(argv: list[str] | None = None) -> None:
    """python -m digitlab.testing.writers DIR [WRITER] [PER_DIGIT] [--mild] [--held-out]: a writer's digits
    as a labelled image folder DIR/<digit>/*.png, the examples `digitlab finetune --images` reads."""
    import argparse

    from digitlab import data

    ap = argparse.ArgumentParser(prog="python -m digitlab.testing.writers", description=main.__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("writer", nargs="?", type=int, default=6, help="its number in STRONG_WRITERS (default 6)")
    ap.add_argument("per_digit", nargs="?", type=int, default=10, help="examples of each digit (default 10)")
    ap.add_argument("--mild", action="store_true", help="a writer of WRITERS instead (the six mild hands)")
    ap.add_argument("--held-out", action="store_true", help="digits of the writer's held-out part (up to 50 of "
                    "each): what they write after teaching the reader")
    args = ap.parse_args(argv)
    writers = WRITERS if args.mild else STRONG_WRITERS
    x, y = data.load("mnist", "test")
    pool, held = writer_split(y, args.writer, 20, 50, len(writers)) if not args.mild else writer_split(y, args.writer)
    if args.held_out:
        per = len(held) // 10
        take = np.concatenate([held[d * per:d * per + args.per_digit] for d in range(10)])
    else:
        take = pool[:10 * args.per_digit]
    write_folder(args.dir, writers[args.writer], x[take], y[take])
    print(f"{len(take)} digits by writer {args.writer} ({writers[args.writer].name}) -> {args.dir}")


if __name__ == "__main__":
    main()
