"""Printed structure is not ink: ruled lines, grids, box frames (closed or open at the top),
underlines and dotted lines, found in an ink map and taken out without erasing the handwriting
that crosses or touches them; and the fields a row of boxes (a comb) marks out.

Which ink pixels are printed lines is learned: `LineFinder` runs a small network (lab/lines.py trains
it on pages drawn with MNIST training digits, where line and handwriting are known apart), so a
stroke lying along a line, or crossing it, stays. The geometry is found by rules, in the printed
lines alone: which lines frame boxes, and so which box each digit is written in. Where no line finder
is shipped, the rules also choose the pixels (`remove_by_rules`). A printed line differs from a pen
stroke in three ways the rules rely on, none of them a colour:
- it is long: a horizontal line spans most of the picture's width (LINE_SPAN), a vertical one most
  of its height, or it joins two horizontal lines (a box's side), or it stands in a row of equally
  long verticals on one line (a comb open at the top);
- it is straight: it survives an opening with a line-shaped kernel that long (after a dilation of
  TILT px across it, so a photo's slight rotation does not break it up);
- it is thin for its length: at least MIN_ASPECT times longer than thick, and at most THIN of the
  picture's short side thick (the bar of a 7 that fills a 16x16 scan is neither).
Ruled and squared paper's lines are evenly spaced, and a comb's boxes equally wide: a line a digit
hides is found where the others say it is, and a comb is the equal cells between its ends that
explain most of the sides found (`grid_sides`). A photographed form is rarely square to the camera:
`skew` measures how far its lines are turned and `deskew` turns them back before the rules run. A
picture with no long, thin run of ink in any band of rows or columns costs two projections
(`might_have_lines`) and nothing more.

    clean, structure = remove_structure(ink)   # uint8 ink map (paper 0) -> same without the lines
    structure.fields                           # boxes of a comb / box, (left, top, right, bottom)
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from digitlab.errors import ModelError

LINE_MODEL = Path(__file__).resolve().parent / "assets" / "line-model.onnx"  # the learned line finder
SIDE = 96  # it reads an ink map scaled to this many pixels on its short side
LINE_SPAN = 0.6  # a free-standing line spans at least this share of the picture's width (or height)
UPRIGHT_SPAN = 0.85  # ... and an upright one alone (a margin, squared paper's) this share of its height, by the
# cheap test: a digit drawn on a canvas spans up to about 0.75 of it
MIN_ASPECT = 15.0  # ... and is at least this many times longer than thick
SIDE_ASPECT = 6.0  # a box's side, shorter, at least this many times (it must also meet the box's top and bottom)
THIN = 0.06  # ... and at most this share of the picture's short side thick
TILT = 3  # rows (columns) a horizontal (vertical) line may drift over its length: about 1 degree over 170 px
INK_LEVEL = 4  # ink-map level (of 255) above which a pixel counts as ink for the cheap test
REMNANT = 3.0  # a blob beside a removed line and no larger than this many times its thickness is a remnant
STROKE_LEVEL = 40  # ink above this (of 255) is what a stroke crossing a line is measured in
RIDGE = 5  # a line's pixels are at least this much brighter (of 255) than the ink map beside them
JOIN = 0.02  # a vertical's end within this share of the height of a horizontal line joins it (a box's corner)
BOX_SIDE = 0.2  # the top or bottom of a box is at least this share of the picture's width
MAX_SKEW = 3.0  # degrees a photographed form may be turned (skew); a larger turn is not looked for
SKEW_STEP = 0.25  # ... to this many degrees: at SKEW_WORK px, under a pixel of drift
SKEW_WORK = 160  # the long side (px) the skew is measured at
SMALL = 256  # the long side (px) the cheap test looks at (a canvas is read smaller than this)
BOX_PEN = 0.08  # a box's lines are at most this share of its height thick (printed forms: 1-5%)
OPEN_SIDE = 0.06  # sides open at the top are looked for in a band this share of the picture's height above their line
SIDE_COVER = 0.75  # a comb's side has vertical ridge along this share of the height between its lines
HIDDEN = 0.4  # ... and up to this share of its inner sides may be hidden under the digits written over them
COMB_SIDE = 0.15  # the sides of a box open at the top are at least this share of the picture's height


@dataclass
class Structure:
    """The printed lines found in an ink map (at its size)."""

    across: np.ndarray  # uint8 mask, 255 on the horizontal lines' pixels (their anti-aliased edge included)
    down: np.ndarray  # the same for the vertical lines
    rows: list[tuple[int, int, int, int]] = field(default_factory=list)  # horizontal lines' boxes (l, t, r, b)
    columns: list[tuple[int, int, int, int]] = field(default_factory=list)  # vertical lines' boxes

    @property
    def fields(self) -> list[tuple[int, int, int, int]]:
        return cells(self.columns, self.rows)


def cells(columns: list, rows: list | None = None) -> list[tuple[int, int, int, int]]:
    """The boxes between neighbouring vertical lines that end on a common horizontal line (a form's
    boxes, a comb's cells), left to right, as (left, top, right, bottom) inside the frame. A comb's
    cells are equally wide, so a field k times the narrowest is k cells whose sides were lost
    (a digit written over them), and where the comb's top or bottom line runs on past its last side
    found, the cells go on to the line's end. rows None: the horizontal lines are not looked at."""
    if len(columns) < 2 or rows == []:
        return []
    cols = sorted(columns)
    found = []
    for a, b in zip(cols, cols[1:], strict=False):
        top, bottom = max(a[1], b[1]), min(a[3], b[3])
        if bottom - top < 0.5 * max(a[3] - a[1], b[3] - b[1]):
            continue  # not the same row of boxes
        if b[0] - a[2] < 0.5 * (bottom - top):
            continue  # two sides of one line, a double rule, or a stroke beside a side
        found.append((a[2], top, b[0], bottom))
    if len(found) < 2:
        return found
    widths = np.array([f[2] - f[0] for f in found], np.float64)
    unit = float(np.median(widths[widths <= 1.3 * widths.min()]))
    out = []
    for left, top, right, bottom in found:
        k = max(1, round((right - left) / unit))
        edges = np.linspace(left, right, k + 1).round().astype(int)
        out += [(int(a), top, int(b), bottom) for a, b in zip(edges, edges[1:], strict=False)]
    top, bottom = out[0][1], out[0][3]
    frame = [r for r in rows or [] if r[1] <= top + 0.25 * (bottom - top) or r[3] >= bottom - 0.25 * (bottom - top)]
    if frame:  # sides the first and last digits hid: the frame's lines say how far the comb goes
        side = float(np.median([c[2] - c[0] for c in cols]))
        pitch = unit + side  # from one side to the next
        first, last = out[0][0] - side, out[-1][2] + side  # the outer edges of the outermost sides found
        before = round((first - min(r[0] for r in frame)) / pitch)
        after = round((max(r[2] for r in frame) - last) / pitch)
        out = ([(round(first - k * pitch - unit), top, round(first - k * pitch), bottom) for k in range(before)][::-1]
               + out + [(round(last + k * pitch), top, round(last + k * pitch + unit), bottom) for k in range(after)])
    return out


def ridges(x: np.ndarray, horizontal: bool, width: int) -> np.ndarray:
    """uint8 mask of thin ridges of ink running along one direction: pixels brighter by RIDGE than the
    ink map opened across that direction (a top-hat), so a line is found whatever grey of paper or
    shading surrounds it, and a stroke thicker than `width` is not one."""
    kernel = np.ones((width, 1) if horizontal else (1, width), np.uint8)
    return (cv2.morphologyEx(x, cv2.MORPH_TOPHAT, kernel) > RIDGE).astype(np.uint8)


def small_mask(x: np.ndarray) -> np.ndarray:
    """x's ink (above INK_LEVEL) as a 0/1 mask at most SMALL pixels on its long side: what the cheap
    tests look at."""
    m = cv2.threshold(x, INK_LEVEL, 1, cv2.THRESH_BINARY)[1]
    f = SMALL / max(m.shape)
    if f >= 1:
        return m
    size = (max(1, round(m.shape[1] * f)), max(1, round(m.shape[0] * f)))
    return (cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_AREA) > 0).astype(np.uint8)


def might_have_lines(x: np.ndarray) -> bool:
    """Cheap test: does any band of rows have ink in 0.8 x LINE_SPAN of its columns, or any band of
    columns in most of its rows, counting only ink as thin as a printed line can be (THIN)? The band is
    as wide as a line tilted by MAX_SKEW degrees drifts across the picture. A picture
    of a digit alone has no such band unless the digit fills the frame, which the full test then
    rejects. A band counts the columns (rows) where it has ink, not its ink pixels, so that a thick
    stroke is not taken for a long line; the thin ink is looked at only where all ink passes."""
    m = small_mask(x)
    if not long_band(m, m):
        return False
    # only ink as thin as a printed line can be: the bar of a big, bold 7 is no line
    width = int(THIN * min(m.shape)) + 3
    across = cv2.morphologyEx(m, cv2.MORPH_TOPHAT, np.ones((width, 1), np.uint8))
    down = cv2.morphologyEx(m, cv2.MORPH_TOPHAT, np.ones((1, width), np.uint8))
    return long_band(across, down)


def long_band(across: np.ndarray, down: np.ndarray) -> bool:
    """might_have_lines' projections: a band of rows of `across` or of columns of `down` (0/1 masks)."""
    h, w = across.shape
    drift = np.tan(np.radians(MAX_SKEW))
    band_rows = 1 + 2 * int(np.ceil(w * drift / 2))
    band_cols = 1 + 2 * int(np.ceil(h * drift / 2))
    rows = cv2.reduce(cv2.dilate(across, np.ones((band_rows, 1), np.uint8)), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F)
    cols = cv2.reduce(cv2.dilate(down, np.ones((1, band_cols), np.uint8)), 0, cv2.REDUCE_SUM, dtype=cv2.CV_32F)
    # a box's sides or a comb's need a horizontal line too: only a free-standing vertical is looked for alone
    return bool(rows.max(initial=0) >= 0.8 * LINE_SPAN * w or cols.max(initial=0) >= UPRIGHT_SPAN * h)


def skew(x: np.ndarray) -> float:
    """The angle (degrees, counter-clockwise) by which the picture's long horizontal lines are tilted,
    within MAX_SKEW: the rotation under which its thin horizontal ridges pile up in the fewest rows
    (their row profile is sharpest), tried every degree and then every SKEW_STEP around the best. A
    photo of a form is rarely square to the camera; the rules that follow want its lines along the
    pixel rows."""
    f = min(1.0, SKEW_WORK / max(x.shape))
    small = cv2.resize(x, None, fx=f, fy=f, interpolation=cv2.INTER_AREA) if f < 1 else x
    h, w = small.shape
    thin = ridges(small, True, 2 * int(THIN * min(h, w) + 2) + 3).astype(np.float32)

    def sharpness(angle: float) -> float:
        turned = cv2.warpAffine(thin, cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0), (w, h))
        return float((cv2.reduce(turned, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32F).astype(np.float64) ** 2).sum())

    coarse = max(np.arange(-MAX_SKEW, MAX_SKEW + 1e-9, 1.0), key=sharpness)
    fine = max(coarse + np.arange(-2, 3) * SKEW_STEP, key=sharpness)
    return -float(fine)


def deskew(x: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """x turned so that lines tilted by `angle` degrees lie along the rows, on a canvas grown to hold
    all of it; and the 2x3 affine map from x's pixels to the turned picture's."""
    h, w = x.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), -angle, 1.0)
    cos, sin = abs(matrix[0, 0]), abs(matrix[0, 1])
    size = (int(np.ceil(w * cos + h * sin)), int(np.ceil(h * cos + w * sin)))
    matrix[:, 2] += (size[0] - w) / 2, (size[1] - h) / 2
    return cv2.warpAffine(x, matrix, size, flags=cv2.INTER_LINEAR, borderValue=0), matrix


def straight_runs(m: np.ndarray, length: int, horizontal: bool) -> np.ndarray:
    """Pixels of m on straight runs at least `length` long (the shape a printed line has), tolerant of
    TILT px of drift and of the gaps of a dashed or dotted line."""
    h, w = m.shape
    gap = max(5, (w if horizontal else h) // 15)
    across, along = ((1, TILT), (gap, 1)) if horizontal else ((TILT, 1), (1, gap))
    joined = cv2.morphologyEx(cv2.dilate(m, np.ones(across[::-1], np.uint8)), cv2.MORPH_CLOSE,
                              np.ones(along[::-1], np.uint8))
    kernel = np.ones((1, length) if horizontal else (length, 1), np.uint8)
    return cv2.morphologyEx(joined, cv2.MORPH_OPEN, kernel) & cv2.dilate(m, np.ones((3, 3), np.uint8))


def line_boxes(runs: np.ndarray, m: np.ndarray, horizontal: bool, min_length: float, max_thick: float,
               min_aspect: float = MIN_ASPECT) -> dict[tuple[int, int, int, int], float]:
    """{(left, top, right, bottom): thickness} of the thin, long blobs of `runs`. A blob's thickness is
    the median, along it, of its own ridge pixels (m) across it: a stroke touching the line in one
    place, or a crossing, does not make the line thick."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(runs, connectivity=8)
    found = {}
    for i, (left, top, w, h, _) in enumerate(stats[1:n], start=1):
        length = w if horizontal else h
        if length < min_length:
            continue
        own = (labels[top:top + h, left:left + w] == i) & (m[top:top + h, left:left + w] > 0)
        thick = float(np.median(own.sum(axis=0 if horizontal else 1)))
        if thick > max_thick or length < min_aspect * thick:
            continue
        # the box of the line itself: a stroke touching it made the blob's box taller (wider)
        band = np.zeros(own.shape, np.uint8)
        line_pixels(band, own, (0, 0, w, h), thick, horizontal)
        x, y, bw, bh = cv2.boundingRect(band)
        if bw and bh:
            found[(int(left + x), int(top + y), int(left + x + bw), int(top + y + bh))] = thick
    return found


def find_structure(x: np.ndarray) -> Structure | None:
    """The printed lines of an ink map (uint8, paper 0), or None where it has none."""
    h, w = x.shape
    if min(h, w) < 16 or not might_have_lines(x):
        return None
    max_thick = THIN * min(h, w) + 2  # and the soft edge of a thin line, which the ridges hold too
    width = 2 * int(max_thick) + 3
    # where two lines cross, each is a wide blob across the other's direction, which the top-hat
    # takes out of it: so both directions' ridges together are what a line must run straight through
    down = ridges(x, False, width)
    thin = ridges(x, True, width) | down
    # candidates: a box's sides and top may be short; only where they frame a box do they count
    shortest = max(8, int(BOX_SIDE * w))
    wide = line_boxes(straight_runs(thin, shortest, True), thin, True, shortest, max_thick, SIDE_ASPECT)
    shortest = max(8, int(COMB_SIDE * h))
    tall = line_boxes(straight_runs(thin, shortest, False), thin, False, shortest, max_thick, SIDE_ASPECT)
    # A box's sides meet its top and bottom, all drawn with one pen; a box open at the top stands on
    # its bottom line. A line across the whole picture (ruled or squared paper) frames no box: the
    # part of a stroke between two ruled lines is no side.
    thick = wide | tall
    edge = 0.005 * w + 3
    framing = [r for r in wide if r[0] > edge or r[2] < w - edge]
    sides, edges = comb_sides(down, list(wide), thick)
    if not sides:  # no row of closed boxes: single sides that meet two lines, or boxes open at the top
        closed = [c for c in tall if joins_two(c, framing, h)]
        open_top = open_top_sides([c for c in tall if c not in closed], framing, h)
        # a box's top or bottom is met by at least two sides drawn with its pen (a digit's stroke is thicker)
        meeting = {r: [c for c in closed + open_top if meets(c, r, h) and same_pen(thick[c], thick[r])]
                   for r in framing}
        edges = [r for r in framing if len(meeting[r]) >= 2]
        sides = [c for c in closed if joins_two(c, [r for r in edges if c in meeting[r]], h)]
        sides += [c for c in open_top if any(c in meeting[r] for r in edges)]
    pen = float(np.median([thick[r] for r in edges])) if edges else 3.0
    thick |= {c: pen for c in sides if c not in thick}  # a side placed by the comb's spacing: its lines' pen
    grid = [c for c in tall if c not in sides and free_standing(c, h) and c[3] - c[1] >= MIN_ASPECT * thick[c]]
    columns = sorted(sides + complete_grid(grid, thin, False))
    ruled = [r for r in wide if r not in edges and r[2] - r[0] >= max(LINE_SPAN * w, MIN_ASPECT * thick[r])]
    rows = [r for r in wide if (r in edges and any(meets(c, r, h) for c in sides))
            or (r[2] - r[0] >= MIN_ASPECT * thick[r] and underline(r, thick[r], x) and r not in ruled)]
    rows += complete_grid(ruled, thin, True)
    if sides:
        found = hidden_sides(sides, cells(sides, rows), thin)
        thick |= {c: pen for c in found if c not in thick}
        columns = sorted(found + [c for c in columns if c not in sides])
    if not rows and not columns:
        return None
    masks = []
    for boxes, horizontal in ((rows, True), (columns, False)):
        lines = np.zeros((h, w), np.uint8)
        for box in boxes:
            line_pixels(lines, thin, box, thick.get(box, 3.0), horizontal)
        masks.append(cv2.dilate(lines * 255, np.ones((3, 3), np.uint8)))  # and their soft edge
    return Structure(*masks, sorted(rows, key=lambda r: r[1]), columns)


def comb_sides(down: np.ndarray, rows: list, thick: dict) -> tuple[list, list]:
    """(sides, the lines they stand between) of rows of boxes closed at the top (a comb, or one box):
    between each horizontal line and the nearest one below it that runs as far (80%), drawn with the
    same pen, the columns where vertical ridges run SIDE_COVER of the way down (`grid_sides`)."""
    sides, edges = [], []
    rows = sorted(rows, key=lambda r: r[1])
    for i, top in enumerate(rows):
        for bottom in rows[i + 1:]:
            left, right = max(top[0], bottom[0]), min(top[2], bottom[2])
            # a row of boxes' top and bottom run the same length (a stroke of a digit does not)
            if right - left < 0.8 * max(top[2] - top[0], bottom[2] - bottom[0]) or bottom[1] - top[3] < 8:
                continue
            # printed with one thin pen: a digit's strokes (a 0's top and bottom) are thick for its size
            if same_pen(thick[top], thick[bottom]) and max(thick[top], thick[bottom]) <= BOX_PEN * (bottom[1] - top[3]):
                found = grid_sides(down[top[3]:bottom[1]], left, right)
                sides += [(a, top[1], b, bottom[3]) for a, b in found]
                edges += [top, bottom] if found else []
            break
    if sides:
        return sides, edges
    # boxes open at the top: sides standing on a line, seen in a short band just above it
    for line in rows:
        rise = max(5, int(OPEN_SIDE * down.shape[0]))
        if line[1] < rise:
            continue
        found = grid_sides(down[line[1] - rise:line[1]], line[0], line[2])
        if len(found) >= 3:  # two sides alone on a line are as likely two strokes touching it
            sides += [(a, side_top(down, a, b, line[1]), b, line[3]) for a, b in found]
            edges.append(line)
    return sides, edges


def side_top(down: np.ndarray, left: int, right: int, foot: int) -> int:
    """How far up a side standing on a line at row `foot` runs: the first row above it, allowing gaps of
    two rows (a dashed or faint line), where columns left..right hold no vertical ridge."""
    column = down[:foot, max(0, left - 1):right + 1].any(axis=1)
    top, gap = foot, 0
    for y in range(foot - 1, -1, -1):
        gap = 0 if column[y] else gap + 1
        if gap > 2:
            break
        if column[y]:
            top = y
    return top


def grid_sides(band: np.ndarray, left: int, right: int) -> list[tuple[int, int]]:
    """The sides of a row of equal boxes in the band between its top and bottom lines (a vertical-ridge
    mask, the lines' length from `left` to `right`), as (left, right) columns; [] where the band holds
    no such row. A comb is n equal cells between its ends: of the n that make the cells 0.4-2.5 times
    as wide as tall, the one that puts a side found on the most of its inner places, with at most
    HIDDEN of them missing (a digit written over them), wins; a place without a side found gets one.
    A digit's upright stroke between the places is no side."""
    height = band.shape[0]
    cover = (cv2.dilate(band, np.ones((1, 3), np.uint8)) > 0).mean(axis=0)
    strong = np.flatnonzero(cover >= SIDE_COVER)
    if strong.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(strong) > 1)
    starts, ends = np.r_[strong[0], strong[breaks + 1]], np.r_[strong[breaks], strong[-1]]
    runs = [(int(a), int(b) + 1) for a, b in zip(starts, ends, strict=True)]
    reach = 0.25 * height
    runs = [r for r in runs if left - reach <= (r[0] + r[1]) / 2 <= right + reach]
    centres = np.array([(a + b) / 2 for a, b in runs])
    if len(runs) < 2 or centres[0] > left + reach or centres[-1] < right - reach:
        return []  # a row of boxes ends in sides where its lines end
    first, last = centres[0], centres[-1]
    best, best_found = None, -1
    for n in range(1, int((last - first) / (0.4 * height)) + 1):
        unit = (last - first) / n
        if unit > 2.5 * height:
            continue
        places = first + unit * np.arange(n + 1)
        near = [int(np.argmin(np.abs(centres - p))) for p in places]
        found = [k if abs(centres[k] - p) <= 0.15 * unit else None for k, p in zip(near, places, strict=True)]
        inner = sum(f is not None for f in found[1:-1])
        if n > 1 and inner < (1 - HIDDEN) * (n - 1):
            continue
        if inner > best_found:
            best, best_found = (places, found), inner
    if best is None:
        return []
    places, found = best
    return [runs[k] if k is not None else (int(p) - 1, int(p) + 2) for k, p in zip(found, places, strict=True)]


def line_pixels(out: np.ndarray, thin: np.ndarray, box: tuple[int, int, int, int], thick: float,
                horizontal: bool) -> None:
    """Mark in `out` a line's own ridge pixels: those within its thickness of the straight line fitted
    through its box's ridge pixels. The box of a tilted line, or of one a stroke touches, holds more
    than the line, and a stroke's edge inside it is no line: so the line is fitted through the middle
    of the columns (rows) where the ridge is no thicker than the line, where it is alone."""
    left, top, right, bottom = box
    part = thin[top:bottom, left:right] > 0
    if not horizontal:
        part = part.T
    counts = part.sum(axis=0)
    alone = np.flatnonzero((counts > 0) & (counts <= thick + 2))
    if len(alone) < 2:
        return
    middles = (part[:, alone] * np.arange(part.shape[0])[:, None]).sum(axis=0) / counts[alone]
    slope, offset = np.polyfit(alone.astype(np.float64), middles, 1)
    rows = np.arange(part.shape[0])[:, None]
    on = part & (np.abs(rows - (slope * np.arange(part.shape[1]) + offset)[None, :]) <= thick / 2 + 1.5)
    if not horizontal:
        on = on.T
    out[top:bottom, left:right] |= on.astype(out.dtype)


def hidden_sides(sides: list, fields: list, thin: np.ndarray) -> list:
    """A comb's sides, with those a digit written over hid from `line_boxes` (its stroke along the side
    made the line look thick) or that stand past the last side found, found where the comb's equal
    cells (`fields`) say they stand: the column of most ridge pixels within a fifth of a cell of that
    place, when it runs most of the cell's height."""
    if len(fields) < 2:
        return sides
    found = list(sides)
    for left, top, right, bottom in fields:
        for place in (left, right):
            if any(c[0] - 2 <= place <= c[2] + 2 for c in found):
                continue  # a side that was found
            reach = max(2, (right - left) // 5)
            lo = max(0, place - reach)
            counts = thin[top:bottom, lo:place + reach].sum(axis=0)
            if counts.size and counts.max() >= 0.6 * (bottom - top):
                at = np.flatnonzero(counts >= 0.5 * counts.max())
                best = int(np.argmax(counts))
                at = at[np.abs(at - best) <= 3]
                found.append((lo + int(at.min()), top, lo + int(at.max()) + 1, bottom))
    return sorted(found)


def same_pen(a: float, b: float) -> bool:
    """Two lines of one printed frame are about as thick (a pen stroke is thicker than a box's line)."""
    return a <= 1.3 * b + 1 and b <= 1.3 * a + 1


def underline(r: tuple[int, int, int, int], thick: float, x: np.ndarray) -> bool:
    """A thin horizontal line reaching past the handwriting above it on both sides: a printed line
    the digits were written on. A digit's own base (a 2's) ends where the digit does."""
    left, top, right, bottom = r
    above = x[:top].max(axis=0) > 0 if top > 0 else np.zeros(x.shape[1], bool)
    cols = np.flatnonzero(above)
    if not cols.size:
        return False
    reach = 2 * thick + 2
    return left <= cols[0] - reach and right >= cols[-1] + reach


def complete_grid(lines: list, thin: np.ndarray, horizontal: bool) -> list:
    """Ruled or squared paper's lines across the picture, with those a digit written over hid from
    `line_boxes` found where the others' even spacing says they are: the row (column) of most ridge
    pixels within a sixth of the spacing of that place, when it runs most of the picture across."""
    if len(lines) < 2:
        return list(lines)
    axis = 1 if horizontal else 0  # the coordinate across the lines: y of a horizontal line
    centres = np.sort([(b[axis] + b[axis + 2]) / 2 for b in lines])
    gaps = np.diff(centres)
    spacing = float(gaps.min())
    if spacing < 4 or np.any(np.abs(gaps / spacing - np.round(gaps / spacing)) > 0.2):
        return list(lines)  # not evenly spaced: no grid to complete
    counts = thin.sum(axis=1 if horizontal else 0)  # ridge pixels along each row (column)
    extent = thin.shape[1 if horizontal else 0]
    found = list(lines)
    start = centres[0] - spacing * np.floor(centres[0] / spacing)
    for at in np.arange(start, thin.shape[0 if horizontal else 1], spacing):
        if np.min(np.abs(centres - at)) <= spacing / 5:
            continue
        lo, hi = max(0, int(at - spacing / 6)), min(len(counts), int(at + spacing / 6) + 1)
        if hi <= lo or counts[lo:hi].max() < 0.5 * extent:
            continue
        best = lo + int(np.argmax(counts[lo:hi]))
        band = [i for i in range(max(lo, best - 3), min(hi, best + 4)) if counts[i] >= 0.5 * counts[best]]
        a, b = min(band), max(band) + 1
        found.append((0, a, extent, b) if horizontal else (a, 0, b, extent))
    return found


def free_standing(c: tuple[int, int, int, int], h: int) -> bool:
    """A vertical line running (nearly) the picture's whole height: a grid's, a notebook's margin."""
    return c[3] - c[1] >= 0.9 * h


def meets(c: tuple[int, int, int, int], r: tuple[int, int, int, int], h: int, end: str = "either") -> bool:
    """Does vertical c end on horizontal r (its top or its bottom within r's band, which a tilted line
    widens), within r's length? Boxes are (left, top, right, bottom)."""
    slack = JOIN * h + 2
    if not r[0] - slack <= c[0] <= r[2] + slack:
        return False
    top, bottom = r[1] - slack <= c[1] <= r[3] + slack, r[1] - slack <= c[3] <= r[3] + slack
    return top if end == "top" else bottom if end == "bottom" else top or bottom


def joins_two(c: tuple[int, int, int, int], rows: list, h: int) -> bool:
    """A vertical whose ends meet two horizontal lines: the side of a box."""
    return any(meets(c, r, h, "top") for r in rows) and any(meets(c, r, h, "bottom") for r in rows)


def open_top_sides(candidates: list, rows: list, h: int) -> list:
    """The sides of boxes open at the top: verticals standing on one horizontal line, of nearly one
    length (within a fifth), their tops level (a row of pen strokes is never so even), either at
    least three of them (a comb) or two at the line's two ends (one box)."""
    slack = JOIN * h + 2
    on_line = [c for c in candidates if any(meets(c, r, h, "bottom") for r in rows)]
    if len(on_line) == 2:
        ends = [c for c in on_line if any(meets(c, r, h, "bottom") and
                                          (abs(c[0] - r[0]) <= slack or abs(c[2] - r[2]) <= slack) for r in rows)]
        on_line = ends if len(ends) == 2 and ends[0][0] != ends[1][0] else []
    if len(on_line) < 2:
        return []
    lengths = np.array([c[3] - c[1] for c in on_line], np.float64)
    tops = np.array([c[1] for c in on_line], np.float64)
    typical, level = float(np.median(lengths)), float(np.median(tops))
    even = [c for c, n, t in zip(on_line, lengths, tops, strict=True)
            if abs(n - typical) <= 0.2 * typical and abs(t - level) <= slack]
    return even if len(even) == len(on_line) or len(even) >= 3 else []


def remove_structure(x: np.ndarray, finder: LineFinder | None = None) -> tuple[np.ndarray, Structure | None]:
    """The ink map without its printed lines (uint8, paper 0), and what was found (None: nothing, and
    x itself is returned). Where the learned line finder is there (`finder`, default the shipped one),
    it says which ink pixels are printed lines, and the rules find the boxes in what it found; else
    the rules do both."""
    if min(x.shape) < 16 or not might_have_lines(x):
        return x, None
    finder = finder or line_finder()
    if finder is None:
        return remove_by_rules(x)
    found = finder(x) & (x > 0)
    if not found.any():
        return x, None
    lines = np.where(found, x, 0).astype(np.uint8)
    geometry = find_structure(lines)  # the boxes and rows, from the printed lines alone
    structure = geometry or Structure(found.astype(np.uint8) * 255, np.zeros(x.shape, np.uint8))
    width = max([ink_thickness(found.astype(np.uint8), b, True) for b in structure.rows]
                + [ink_thickness(found.astype(np.uint8), b, False) for b in structure.columns], default=2)
    return drop_remnants(np.where(found, 0, x).astype(np.uint8), found, REMNANT * width), structure


class LineFinder:
    """The learned line finder (lab/lines.py trains it): ONNX, onnxruntime, one thread. Thread-safe:
    each call builds its own arrays."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        data = path.read_bytes()
        card = json.loads(path.with_suffix(".json").read_text())
        if card.get("sha256") != model_sha256(data):
            raise ModelError(f"{path}: does not match the SHA-256 in {path.with_suffix('.json').name}")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.card = card

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """uint8 ink map -> bool mask of its printed-line pixels, at its size."""
        h, w = x.shape
        f = SIDE / min(h, w)
        size = (max(16, round(w * f)), max(16, round(h * f)))
        small = cv2.resize(x, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
        logits = self.session.run(None, {"ink": (small.astype(np.float32) / 255)[None, None]})[0][0, 0]
        return cv2.resize(logits, (w, h), interpolation=cv2.INTER_LINEAR) > 0


def model_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@functools.cache
def line_finder() -> LineFinder | None:
    """The shipped line finder, loaded once; None where the reader ships without one."""
    return LineFinder(LINE_MODEL) if LINE_MODEL.is_file() else None


def remove_by_rules(x: np.ndarray) -> tuple[np.ndarray, Structure | None]:
    """`remove_structure` by the rules alone. Only a line's own thickness goes: where ink runs across a
    line further than the line is thick (a stroke crossing it, or lying along it with a wider pen),
    it stays."""
    structure = find_structure(x)
    if structure is None:
        return x, None
    ink = (x > STROKE_LEVEL).astype(np.uint8)
    gone = np.zeros(x.shape, bool)
    widest = 1
    for lines, other, boxes, horizontal in ((structure.across, structure.down, structure.rows, True),
                                            (structure.down, structure.across, structure.columns, False)):
        if not boxes:
            continue
        # strokes: ink running across the line further than the line's own ink is thick (the other
        # lines are no stroke)
        width = max(ink_thickness(ink & (lines > 0), box, horizontal) for box in boxes)
        widest = max(widest, width)
        strokes = cv2.morphologyEx(ink & (other == 0), cv2.MORPH_OPEN,
                                   np.ones((width + 2, 1) if horizontal else (1, width + 2), np.uint8))
        gone |= (lines > 0) & (strokes == 0)
    return drop_remnants(np.where(gone, 0, x).astype(np.uint8), gone, REMNANT * widest), structure


def drop_remnants(x: np.ndarray, gone: np.ndarray, size: float) -> np.ndarray:
    """x without the blobs no larger than `size` that touch what was removed: what is left of a line
    (a corner, a dot of a dotted line, an edge the removal missed), never a stroke of a digit."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats((x > 0).astype(np.uint8), connectivity=8)
    if n <= 1:
        return x
    touching = np.zeros(n, bool)
    touching[np.unique(labels[cv2.dilate(gone.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0])] = True
    small = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]) <= size
    drop = touching & small
    drop[0] = False
    return np.where(drop[labels], 0, x).astype(np.uint8) if drop.any() else x


def ink_thickness(ink: np.ndarray, box: tuple[int, int, int, int], horizontal: bool) -> int:
    """How thick a line's ink is: the median, along its box, of its ink pixels across it."""
    left, top, right, bottom = box
    runs = ink[max(0, top - 2):bottom + 2, max(0, left - 2):right + 2].sum(axis=0 if horizontal else 1)
    runs = runs[runs > 0]
    return int(np.median(runs)) if runs.size else 1
