"""Reading people's images: one digit (`classify`) or a row of digits (`read`), with honest confidence.

The model sees only what `preprocess` makes of the image. A row of digits is cut into digits by
connected components; pieces that overlap horizontally are one digit drawn in several strokes (the
hat of a 5, a 4 in two strokes). Digits that touch are separated along the cheapest path through the
ink from top to bottom (it slips between two digits that meet in one stroke, where a straight cut
would slice both); candidate paths are scored by the model, and the segmentation the model reads
most confidently wins. Boxes are in the input image's pixels. Confidence is temperature-scaled (the model
card's `temperature`, fitted by `fit_temperature` on held-out data, applied by `infer.OnnxModel`),
so 0.9 means right about 9 times in 10.
No torch here: the model is any object with `predict_proba(uint8 [N, 28, 28]) -> [N, 10]`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from digitlab.errors import NoDigitError
from digitlab.reader.image import load
from digitlab.reader.infer import OnnxModel, bundled
from digitlab.reader.preprocess import (
    PreprocessConfig,
    component_mass,
    ink_map,
    narrower_views,
    normalize_digit,
    prepare,
    remove_specks,
    small_copy,
    stroke_width,
    thinner_view,
)

# Segmentation prior, in log-likelihood units: every digit read costs DIGIT_COST, so cutting a
# digit in two must buy more confidence than that; a digit wider than tall is rare (MNIST: 1%
# beyond 1.4), while two touching digits are usually wider than tall, so each unit of width beyond
# WIDE x the height costs WIDTH_COST (the model alone reads many touching pairs as one digit).
DIGIT_COST = 1.5
WIDE = 0.9
WIDTH_COST = 12.0
WIDTH_OF = 1.0  # a piece's width is judged against its height, or this share of the row's when taller
CUT_MARGIN = 0.25  # cuts start this share of the height in from a blob's edges (a 1 is about this wide)
SKIP_COST = 1.0  # leaving out a fleck far smaller than the row's digits (a dot, a shadow's edge)
MAX_FILL, MAX_STROKE = 0.25, 3.6  # see looks_like_a_digit


def get_model(model=None):
    """None -> the bundled model (loaded once); a path -> that ONNX model; else the object itself."""
    if model is None:
        return bundled()
    if isinstance(model, (str, os.PathLike)):
        return OnnxModel(model)
    return model


# ---------------------------------------------------------------------------- one digit
@dataclass
class Digit:
    label: int | None  # None: below min_confidence (shown as "?")
    confidence: float
    box: tuple[int, int, int, int]  # left, top, right, bottom in the input image's pixels
    probabilities: list[float] = field(repr=False, default_factory=list)
    image: np.ndarray | None = field(repr=False, default=None)  # the 28x28 the model saw

    def as_dict(self) -> dict:
        return {"label": self.label, "confidence": round(self.confidence, 4), "box": list(self.box)}


def as_dict(result: dict) -> dict:
    """A `classify` result as JSON-ready values, rounded to 4 decimals (what the CLI and the API print)."""
    probabilities = result["probabilities"]
    return {"label": result["label"], "status": result["status"], "confidence": round(result["confidence"], 4),
            "probabilities": None if probabilities is None else [round(p, 4) for p in probabilities],
            "box": result.get("box")}


def classify(image, model=None, min_confidence: float = 0.0, config: PreprocessConfig | None = None) -> dict:
    """One digit: {"label", "status", "confidence", "probabilities", "image", "box", "ink"}. label is None
    for a blank image (status "no digit"), ink unlike any digit ("not a digit") or a confidence below
    `min_confidence` ("unsure"). box: the digit's (left, top, right, bottom) in the input's pixels.
    image: the 28x28 the model saw; ink: the whole picture's ink at the reader's working size (uint8,
    every blob but specks), from which `digit_count` tells whether it holds several digits."""
    return classify_many([image], model, min_confidence, config)[0]


def classify_many(images: Sequence, model=None, min_confidence: float = 0.0,
                  config: PreprocessConfig | None = None) -> list[dict]:
    """`classify` of each image, the same answers, faster per image: every image is preprocessed
    first, then the network reads them one by one. Each step's code and data then stay in the CPU's
    cache (about a tenth less time per image for a folder of canvases); one image at a time is this
    network's fastest, as a batch's activations no longer fit the cache."""
    model = get_model(model)
    seen = [look(image, config) for image in images]
    return [read_seen(s, model, min_confidence) for s in seen]


def look(image, config: PreprocessConfig | None) -> tuple | None:
    """classify's preprocessing of one image: (the 28x28, whether it looks like a digit, its box, the
    picture's ink), or None when blank."""
    loaded = load(image)
    try:
        x28, box, ink = prepare(loaded, config)
    except NoDigitError:
        return None
    digit = looks_like_a_digit(x28)
    if not digit:  # too thick or too full: maybe a digit squashed into its frame, or a 1-bit marker
        views = narrower_views(loaded, box, config) + thinner_view(loaded, config)
        x28, digit = next(((v, True) for v in views if looks_like_a_digit(v)), (x28, False))
    return x28, digit, box, ink


def read_seen(seen: tuple | None, model, min_confidence: float) -> dict:
    """classify's answer from `look`'s preprocessing: the network's reading."""
    if seen is None:
        return {"label": None, "status": "no digit", "confidence": 0.0, "probabilities": None, "image": None,
                "box": None, "ink": None}
    x28, digit, box, ink = seen
    p = model.predict_proba(x28[None])[0]
    label, confidence = int(p.argmax()), float(p.max())
    status = "not a digit" if not digit else "ok" if confidence >= min_confidence else "unsure"
    return {"label": label if status == "ok" else None, "status": status, "confidence": confidence,
            "probabilities": [float(v) for v in p], "image": x28, "box": list(box), "ink": ink}


def digit_count(ink: np.ndarray, side: int = 128) -> int:
    """How many digit-sized ink blobs an ink map holds: blob groups (as `components` makes them) at least
    half as tall as the tallest, on a copy reduced to `side` px (cheap; a broken stroke closes up, while
    the gaps of a row of ten digits stay open: at 64 px, 33 of the suite's 50 rows got their count right,
    at 128 px 49)."""
    _, groups = components(small_copy(ink, side))
    heights = [box[3] - box[1] for box, _ in groups]
    return sum(h >= 0.5 * max(heights) for h in heights)


def looks_like_a_digit(x28: np.ndarray) -> bool:
    """Ink statistics a handwritten digit stays within after preprocessing (above the 99.5th percentile
    of MNIST and of the test corpus): a blob, a texture or a filled shape covers too much or is too
    thick. A cheap veto before the model's confidence, which is high on many non-digits."""
    half = 127.5  # ink above half of full scale, in the uint8 pixels themselves (no float copy)
    return np.count_nonzero(x28 > half) / x28.size <= MAX_FILL and stroke_width(x28, half) <= MAX_STROKE


# ---------------------------------------------------------------------------- a row of digits
@dataclass
class Reading:
    text: str  # "" when blank; "?" stands for each digit below min_confidence
    digits: list[Digit]

    def as_dict(self) -> dict:
        return {"text": self.text, "digits": [d.as_dict() for d in self.digits]}


def components(x: np.ndarray) -> tuple[np.ndarray, list[tuple[list[int], list[int]]]]:
    """Ink blobs: the label image and, left to right, ([left, top, right, bottom], [label ids]) per
    digit candidate; blobs overlapping horizontally are merged into one."""
    labels, stats, _ = component_mass(x)
    blobs = sorted(([int(x0), int(t), int(x0 + w), int(t + h)], [i])
                   for i, (x0, t, w, h, _) in enumerate(stats) if i > 0)
    merged: list[tuple[list[int], list[int]]] = []
    for box, ids in blobs:
        if merged:
            m, m_ids = merged[-1]
            overlap = min(m[2], box[2]) - max(m[0], box[0])
            if overlap > 0.4 * min(m[2] - m[0], box[2] - box[0]):
                merged[-1] = ([min(m[0], box[0]), min(m[1], box[1]), max(m[2], box[2]), max(m[3], box[3])],
                              m_ids + ids)
                continue
        merged.append((box, ids))
    return labels, merged


def cheapest_path(ink: np.ndarray, start: int, reach: int, lateral: float = 0.05) -> np.ndarray:
    """The top-to-bottom path (one column per row, moving at most one column per row, within `reach`
    of column `start`) crossing the least ink: where two touching digits meet it slips through the
    one stroke they share. Dynamic programming, one row at a time."""
    h, w = ink.shape
    lo, hi = max(1, start - reach), min(w - 1, start + reach + 1)  # never along the blob's own edge
    band = ink[:, lo:hi]
    cost = band[0].astype(np.float64).copy()
    back = np.zeros(band.shape, np.int8)
    big = np.inf
    for r in range(1, h):
        left = np.concatenate([[big], cost[:-1]]) + lateral
        right = np.concatenate([cost[1:], [big]]) + lateral
        choice = np.argmin(np.stack([left, cost, right]), axis=0)
        cost = np.stack([left, cost, right])[choice, np.arange(len(cost))] + band[r]
        back[r] = choice - 1
    col = int(np.argmin(cost + lateral * np.abs(np.arange(lo, hi) - start)))
    path = np.empty(h, np.int64)
    for r in range(h - 1, -1, -1):
        path[r] = col + lo
        col = int(col + back[r, col])
    return path


def split_points(ink: np.ndarray, height: int) -> list[np.ndarray | None]:
    """Candidate cuts through one blob, left to right: its edges (None) and the distinct cheapest
    paths started every ~height/8 columns away from the edges."""
    h, w = ink.shape
    margin, step = max(1, int(CUT_MARGIN * height)), max(1, height // 8)
    paths: list[np.ndarray] = []
    for start in range(margin, w - margin, step):
        path = cheapest_path(ink, start, max(2, min(height // 4, start - margin // 2, w - margin // 2 - start)))
        if not paths or abs(float(path.mean()) - float(paths[-1].mean())) >= max(1.0, height / 16):
            paths.append(path)
    paths.sort(key=lambda p: float(p.mean()))
    return [None, *paths, None]


def piece_between(ink: np.ndarray, a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray:
    """The ink right of path a and left of path b (None: the blob's edge), slivers of the neighbour
    digit removed."""
    cols = np.arange(ink.shape[1])[None, :]
    mask = np.ones(ink.shape, bool)
    if a is not None:
        mask &= cols >= a[:, None]
    if b is not None:
        mask &= cols < b[:, None]
    piece = np.where(mask, ink, 0.0).astype(np.float32)
    return remove_specks(piece, 0.1) if piece.any() else piece


def read_blob(ink: np.ndarray, origin: tuple[int, int], height: int, model, config,
              row_height: int | None = None) -> tuple[float, list]:
    """(log-likelihood, [(x28, probabilities, (left, top, right, bottom)), ...]) of the best reading
    of one blob as one or more digits: dynamic programming over its candidate cuts, every piece
    scored by the model in one batch. A piece much wider than tall is improbable (MNIST: 1% beyond
    1.4) and every digit costs DIGIT_COST, so a cut must buy more confidence than it costs."""
    h, w = ink.shape
    cuts = split_points(ink, height) if w >= 0.9 * height else [None, None]
    n = len(cuts)
    pieces: dict[tuple[int, int], tuple] = {}
    for i in range(n - 1):
        for j in range(i + 1, n):
            piece = piece_between(ink, cuts[i], cuts[j])
            if not piece.any():
                continue
            rows, cols = np.flatnonzero(piece.any(axis=1)), np.flatnonzero(piece.any(axis=0))
            pw, ph = cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]
            if (i, j) != (0, n - 1) and (ph < 0.5 * height or pw < 0.1 * height):
                continue  # a sliver cut off a digit, not a digit
            if pw > 1.8 * height and (i, j) != (0, n - 1):
                continue  # several digits: only the uncut blob is scored whatever its width
            try:
                x28 = normalize_digit(piece, config)
            except NoDigitError:
                continue
            box = (origin[1] + int(cols[0]), origin[0] + int(rows[0]),
                   origin[1] + int(cols[-1]) + 1, origin[0] + int(rows[-1]) + 1)
            pieces[(i, j)] = (x28, box, pw / max(ph, WIDTH_OF * (row_height or height)))
    if not pieces:
        return -50.0, []
    keys = list(pieces)
    probs = model.predict_proba(np.stack([pieces[k][0] for k in keys]))
    value = {k: math.log(float(p.max()) + 1e-12) - DIGIT_COST - WIDTH_COST * max(0.0, pieces[k][2] - WIDE)
             for k, p in zip(keys, probs, strict=True)}
    proba = dict(zip(keys, probs, strict=True))
    best: list[tuple[float, list]] = [(0.0, [])] + [(-math.inf, [])] * (n - 1)
    for j in range(1, n):
        for i in range(j):
            if (i, j) in value and best[i][0] + value[(i, j)] > best[j][0]:
                best[j] = (best[i][0] + value[(i, j)], best[i][1] + [(i, j)])
    if not best[-1][1]:
        return -50.0, []
    return best[-1][0], [(pieces[k][0], proba[k], pieces[k][1]) for k in best[-1][1]]


def read(image, model=None, min_confidence: float = 0.0, config: PreprocessConfig | None = None) -> Reading:
    """A row of handwritten digits -> Reading(text, digits), digits ordered left to right, boxes in
    the input image's pixels.

    Blobs are grouped by dynamic programming: a digit is one blob or up to three neighbouring blobs
    that (nearly) overlap horizontally (a broken stroke), and each group may be cut again where
    digits touch; the grouping whose digits the model reads most confidently wins."""
    model = get_model(model)
    try:
        m = ink_map(image, config)
    except NoDigitError:
        return Reading("", [])
    x = m.ink
    labels, groups = components(x)
    if not groups:
        return Reading("", [])
    row_height = max(box[3] - box[1] for box, _ in groups)
    best: list[tuple[float, list]] = [(0.0, [])] + [(-math.inf, [])] * len(groups)
    for end in range(1, len(groups) + 1):
        box = groups[end - 1][0]
        if box[3] - box[1] < 0.4 * row_height and box[2] - box[0] < 0.5 * row_height:
            best[end] = (best[end - 1][0] - SKIP_COST, best[end - 1][1])  # a fleck, unless it joins a digit
        for start in range(max(0, end - 3), end):
            members = groups[start:end]
            gaps = [b[0][0] - a[0][2] for a, b in zip(members, members[1:], strict=False)]
            if any(g > 0.1 * row_height for g in gaps):
                continue
            left, top = min(b[0][0] for b in members), min(b[0][1] for b in members)
            right, bottom = max(b[0][2] for b in members), max(b[0][3] for b in members)
            ids = [i for _, member_ids in members for i in member_ids]
            inside = np.isin(labels[top:bottom, left:right], ids)
            own = np.where(inside, x[top:bottom, left:right] / np.float32(255), 0.0)
            value, found = read_blob(own.astype(np.float32), (top, left), max(bottom - top, 1), model, config,
                                     row_height)
            total = best[start][0] + value
            if found and total > best[end][0]:
                best[end] = (total, best[start][1] + found)
    digits = []
    for x28, p, (left, top, right, bottom) in best[-1][1]:
        label, confidence = int(p.argmax()), float(p.max())
        digits.append(Digit(label if confidence >= min_confidence else None, confidence,
                            m.to_input(left, top, right, bottom), [float(v) for v in p], x28))
    text = "".join("?" if d.label is None else str(d.label) for d in digits)
    return Reading(text, digits)
