"""Reading people's images: one digit (`classify`) or a row of digits (`read`), with honest confidence.

The model sees only what `preprocess` makes of the image. A row of digits is cut into digits by
connected components; pieces that overlap horizontally are one digit drawn in several strokes (the
hat of a 5, a 4 in two strokes). Digits that touch are separated by recognition: candidate cuts are
the cheapest paths through the ink (from the top down and from the bottom up, supple and stiff; they
slip between two digits that meet in one stroke, where a straight cut would slice both), every piece
between two cuts is read by the model in one batch, and the chain of pieces the model reads most
confidently wins (`Segmentation`). The row's other digits say how wide one digit is: a blob no wider
is cut only when the model is very sure (`CAUTIOUS`). Boxes are in the input image's pixels.
Confidence is temperature-scaled (the model card's `temperature`, fitted by `fit_temperature` on
held-out data, applied by `infer.OnnxModel`), so 0.9 means right about 9 times in 10.
No torch here: the model is any object with `predict_proba(uint8 [N, 28, 28]) -> [N, 10]`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from digitlab.errors import NoDigitError
from digitlab.reader.image import Loaded, load
from digitlab.reader.infer import OnnxModel, bundled
from digitlab.reader.pipeline import Page, ink_map, narrower_views, prepare, thinner_view
from digitlab.reader.preprocess import (
    PreprocessConfig,
    blob_stats,
    ink_mask,
    normalize_digit,
    remove_specks,
    small_copy,
    stroke_width,
)


@dataclass(frozen=True)
class Segmentation:
    """How one ink blob is read as one or more digits. Candidate cuts are cheapest paths through the
    ink (`split_points`); every piece between two cuts is read by the model, scores the log-probability
    of its label minus the costs below (log-likelihood units), and dynamic programming finds the best
    chain of pieces. Values were chosen on suite seeds 7, 77, 777 and on pairs of MNIST *training*
    digits (never on the benchmark's seed 1234); why each has its value is beside it."""

    # -- scoring
    digit: float = 0.0  # cost of each digit read. 0: no prior on the count, so an extra digit must be
    # read at least as confidently as the reading it replaces (costs of 0.1 / 0.25 lost 13 / 21 points
    # on touching rows for +0.6 / -3 on pairs); CAUTIOUS raises it where the row says one digit is this wide
    wide: float = 0.9  # a digit wider than tall is rare (MNIST: 1% beyond 1.4); each unit of width beyond
    width: float = 12.0  # `wide` x the height costs `width` (the model alone reads many merged pairs as one digit)
    # -- candidate cuts
    min_split: float = 0.5  # a blob narrower than this x its height is one digit (a 1, a slim 7); two
    # touching digits were as narrow as 0.64 x on the development seeds (a 3 and a 1)
    margin: float = 0.1  # cuts end at least this x the height inside the blob's edges: a 1 is about this wide
    step: float = 0.1  # paths end every `step` x the height: about a stroke's width (MNIST: 2 px of 20)
    laterals: tuple[float, ...] = (0.05, 0.5, 3.0)  # cost of moving one column per row, in ink (0-1 per
    # pixel): a supple path winds through any gap, a stiff one cuts nearly straight where digits overlap
    both_ways: bool = True  # paths also from the bottom up: digits touching near the top need paths that
    # start anywhere along the top and fall to the cheapest bottom, and vice versa
    distinct: float = 0.1  # paths closer than this x the height (mean column gap) cut out the same pieces
    shortest: float = 0.6  # a cut piece is at least this x the blob's height: digits in a row are nearly as
    # tall as each other (99% of the true pieces on the development seeds are >= 0.66 x); shorter pieces
    # are a stroke's stub or the place two digits join
    widest: float = 1.3  # a cut piece wider than this x the height is not read: the width prior would take
    # 12 x (1.3 - 0.9) = 4.8 or more from it, more than any reading of narrower pieces loses (the same
    # readings as 1.8 on the development seeds, with fewer model calls in long rows)


SEGMENTATION = Segmentation()
# A blob the rest of the row says is one digit wide: the row reader's settings from before touching
# digits were cut (fewer, supple, top-down cuts; every digit costs 1.5, so a cut must buy a lot of
# confidence): single digits stay whole.
CAUTIOUS = Segmentation(digit=1.5, min_split=0.9, margin=0.25, step=0.125, laterals=(0.05,), both_ways=False,
                        distinct=1 / 16, shortest=0.5)
# A blob at most SPREAD x as wide as the widest other digit in its row is taken to be one digit wide:
# MNIST digit widths vary by 0.33 in log units (sd; exp(0.33) = 1.39), and 1.5 kept the development
# seeds' separate rows as they were (1.0 and 1.2 cut 2-4 more single digits in 160 rows).
SPREAD = 1.5
WIDTH_OF = 1.0  # a piece's width is judged against its height, or this share of the row's when taller
SKIP_COST = 1.0  # leaving out a fleck far smaller than the row's digits (a dot, a shadow's edge)
MAX_FILL, MAX_STROKE = 0.25, 3.6  # see looks_like_a_digit
FIELD_SHARED = 0.3  # a blob with this share of its ink in each of two boxes is two digits touching
FIELD_SPECK = 0.1  # in a printed box, a blob with less than this share of the largest one's ink is a speck
FIELD_INK = 0.005  # ... and a box whose ink covers less than this share of it is empty (remnants of its lines)
# a blob's readings' scores, as log-odds between digit counts, are this many times too timid (chosen
# on the development seeds 7 and 77: 1 made every touching pair unsure, 16 let invented digits be sure)
CUT_SHARPNESS = 4.0
SURE = 0.9  # the default decision: a reading this confident is "ok", a less confident one "unsure" (see decide)


def get_model(model=None):
    """None -> the bundled model (loaded once); a path -> that ONNX model; else the object itself."""
    if model is None:
        return bundled()
    if isinstance(model, (str, os.PathLike)):
        return OnnxModel(model)
    return model


# ---------------------------------------------------------------------------- one digit
def decide(confidence: float, min_confidence: float | None) -> str:
    """The reader's decision on one reading: "ok" (sure) or "unsure". None: the default, SURE."""
    return "ok" if confidence >= (SURE if min_confidence is None else min_confidence) else "unsure"


@dataclass
class Digit:
    guess: int  # the model's best reading
    confidence: float  # its probability
    status: str  # "ok" (sure: `label` is the guess) or "unsure" (label None)
    box: tuple[int, int, int, int]  # left, top, right, bottom in the input image's pixels
    probabilities: list[float] = field(repr=False, default_factory=list)
    image: np.ndarray | None = field(repr=False, default=None)  # the 28x28 the model saw

    @property
    def label(self) -> int | None:
        return self.guess if self.status == "ok" else None

    def as_dict(self) -> dict:
        return {"label": self.label, "guess": self.guess, "status": self.status,
                "confidence": round(self.confidence, 4), "box": list(self.box)}


def as_dict(result: dict) -> dict:
    """A `classify` result as JSON-ready values, rounded to 4 decimals (what the CLI and the API print)."""
    probabilities = result["probabilities"]
    return {"label": result["label"], "guess": result["guess"], "status": result["status"],
            "confidence": round(result["confidence"], 4),
            "probabilities": None if probabilities is None else [round(p, 4) for p in probabilities],
            "box": result.get("box")}


def classify(image, model=None, min_confidence: float | None = None, config: PreprocessConfig | None = None) -> dict:
    """One digit: {"label", "guess", "status", "confidence", "probabilities", "image", "box", "ink"}. label
    is None for a blank image (status "no digit"), ink unlike any digit ("not a digit") or a confidence
    below `min_confidence` ("unsure"; None: the default decision, SURE); guess is the model's best
    reading whatever the status (None when blank). box: the digit's (left, top, right, bottom) in the
    input's pixels.
    image: the 28x28 the model saw; ink: the whole picture's ink at the reader's working size (uint8,
    every blob but specks), from which `digit_count` tells whether it holds several digits."""
    return classify_many([image], model, min_confidence, config)[0]


def classify_many(images: Sequence, model=None, min_confidence: float | None = None,
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
        x28, digit = next(((v, True) for v in other_views(loaded, box, config) if looks_like_a_digit(v)),
                          (x28, False))
    return x28, digit, box, ink


def other_views(loaded: Loaded, box: tuple[int, int, int, int],
                config: PreprocessConfig | None) -> Iterator[np.ndarray]:
    """The views `look` tries after a veto, in order; the thinner one is made only when no narrower
    one passed (each view is a whole preprocessing)."""
    yield from narrower_views(loaded, box, config)
    yield from thinner_view(loaded, config)


def read_seen(seen: tuple | None, model, min_confidence: float | None) -> dict:
    """classify's answer from `look`'s preprocessing: the network's reading."""
    if seen is None:
        return {"label": None, "guess": None, "status": "no digit", "confidence": 0.0, "probabilities": None,
                "image": None, "box": None, "ink": None}
    x28, digit, box, ink = seen
    p = model.predict_proba(x28[None])[0]
    guess, confidence = int(p.argmax()), float(p.max())
    status = "not a digit" if not digit else decide(confidence, min_confidence)
    return {"label": guess if status == "ok" else None, "guess": guess, "status": status, "confidence": confidence,
            "probabilities": [float(v) for v in p], "image": x28, "box": list(box), "ink": ink}


def digit_count(ink: np.ndarray, side: int = 128) -> int:
    """How many digit-sized ink blobs an ink map holds: blob groups (as `components` makes them) at least
    half as tall as the tallest, on a copy reduced to `side` px (cheap; a broken stroke closes up, while
    the gaps of a row of ten digits stay open: at 64 px, 33 of the suite's 50 rows got their count right,
    at 128 px 49)."""
    if cv2.connectedComponents(ink_mask(ink), connectivity=8)[0] <= 2:
        return 1  # one blob (the usual case): a tenth of the time of the reduced copy and its statistics
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
    """A number: its digits left to right. `text` is the best reading (every digit's guess; in a row of
    printed boxes, an empty box between digits is a space), and `status` is "ok" only when every
    digit is and nothing about the page casts doubt on the number (`doubt` says what did), "no digit"
    when there is none. `confidence`: the product of the digits' confidences, the
    probability that the whole number is right when each digit's is independent."""

    digits: list[Digit]
    gaps: tuple[int, ...] = ()  # positions in `text` of empty boxes (a comb's unfilled places)
    doubt: str | None = None  # why the number may be wrong although each digit is sure

    @property
    def text(self) -> str:
        chars = [str(d.guess) for d in self.digits]
        for at in sorted(self.gaps):
            chars.insert(at, " ")
        return "".join(chars)

    @property
    def status(self) -> str:
        if not self.digits:
            return "no digit"
        return "ok" if self.doubt is None and all(d.status == "ok" for d in self.digits) else "unsure"

    @property
    def confidence(self) -> float:
        return float(np.prod([d.confidence for d in self.digits])) if self.digits else 0.0

    def as_dict(self) -> dict:
        return {"text": self.text, "status": self.status, "confidence": round(self.confidence, 4),
                "doubt": self.doubt, "digits": [d.as_dict() for d in self.digits]}


def components(x: np.ndarray) -> tuple[np.ndarray, list[tuple[list[int], list[int]]]]:
    """Ink blobs: the label image and, left to right, ([left, top, right, bottom], [label ids]) per
    digit candidate; blobs overlapping horizontally are merged into one."""
    labels, stats = blob_stats(x)
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


def cheapest_paths(ink: np.ndarray, ends: np.ndarray, lateral: float) -> np.ndarray:
    """[len(ends), h] columns: for each bottom column in `ends`, the top-to-bottom path ending there
    (moving at most one column per row, `lateral` per column moved) that crosses the least ink: where
    two touching digits meet it slips through the one stroke they share. One dynamic-programming pass
    for all ends; the blob's outer columns are never used (a cut along the edge cuts nothing)."""
    h, w = ink.shape
    cost = ink[0].astype(np.float64)
    cost[[0, -1]] = np.inf
    back = np.zeros((h, w), np.int8)
    for r in range(1, h):
        moves = np.full((3, w), np.inf)
        moves[0, 1:], moves[1], moves[2, :-1] = cost[:-1] + lateral, cost, cost[1:] + lateral
        choice = np.argmin(moves, axis=0)
        cost = moves[choice, np.arange(w)] + ink[r]
        cost[[0, -1]] = np.inf
        back[r] = choice - 1
    paths = np.empty((len(ends), h), np.int64)
    cols = np.asarray(ends, np.int64)
    for r in range(h - 1, -1, -1):
        paths[:, r] = cols
        cols = cols + back[r, cols]
    return paths


def split_points(ink: np.ndarray, height: int, prior: Segmentation = SEGMENTATION) -> list[np.ndarray | None]:
    """Candidate cuts through one blob, left to right: its edges (None) and the distinct cheapest
    paths ending every `step` x height columns away from the edges, run from the top down and from
    the bottom up (two digits often touch near one end only), supple and stiff (`laterals`)."""
    h, w = ink.shape
    margin = max(1, int(prior.margin * height))
    ends = np.arange(margin, w - margin, max(1, int(prior.step * height)))
    if not len(ends):
        return [None, None]
    found = []
    for lateral in prior.laterals:
        found += list(cheapest_paths(ink, ends, lateral))
        if prior.both_ways:
            found += list(cheapest_paths(ink[::-1], ends, lateral)[:, ::-1])
    found.sort(key=lambda p: float(p.mean()))
    kept = np.empty((0, h), np.int64)
    for path in found:
        if not len(kept) or np.abs(kept - path).mean(axis=1).min() >= max(1.0, prior.distinct * height):
            kept = np.vstack([kept, path])
    return [None, *kept, None]


def piece_between(ink: np.ndarray, a: np.ndarray | None, b: np.ndarray | None) -> tuple[np.ndarray, int]:
    """The ink right of path a and left of path b (None: the blob's edge), slivers of the neighbour
    digit removed: (the columns from the first that path a reaches to the last path b does, the first
    column's index). Only that band is looked at: a long blob has many pieces."""
    lo = int(a.min()) if a is not None else 0
    hi = int(b.max()) if b is not None else ink.shape[1]
    cols = np.arange(lo, hi)[None, :]
    mask = np.ones((ink.shape[0], hi - lo), bool)
    if a is not None:
        mask &= cols >= a[:, None]
    if b is not None:
        mask &= cols < b[:, None]
    piece = np.where(mask, ink[:, lo:hi], 0.0).astype(np.float32)
    return (remove_specks(piece, 0.1) if piece.any() else piece), lo


@dataclass
class Piece:
    image: np.ndarray  # the 28x28 the model saw
    box: tuple[int, int, int, int]  # left, top, right, bottom in working pixels
    width: float  # its width over its height (or the row's height when that is taller)
    probabilities: np.ndarray
    cut: float = 1.0  # how sure the blob's cut into this many digits is (best_reading)


@dataclass
class Lattice:
    """One blob's candidate readings: `cuts` cuts, its edges included (cut 0 and cut `cuts` - 1);
    pieces[(i, j)] is the ink between cuts i and j, read by the model."""

    cuts: int
    pieces: dict[tuple[int, int], Piece]


def blob_lattice(ink: np.ndarray, origin: tuple[int, int], height: int, model, config,
                 row_height: int | None = None, prior: Segmentation = SEGMENTATION) -> Lattice:
    """Every piece between two candidate cuts of one blob (float ink 0-1 at `origin` (top, left) of
    the working image), scored by the model in one batch."""
    h, w = ink.shape
    cuts = split_points(ink, height, prior) if w >= prior.min_split * height else [None, None]
    n = len(cuts)
    found: dict[tuple[int, int], tuple] = {}
    for i in range(n - 1):
        for j in range(i + 1, n):
            piece, lo = piece_between(ink, cuts[i], cuts[j])
            if not piece.any():
                continue
            rows, cols = np.flatnonzero(piece.any(axis=1)), lo + np.flatnonzero(piece.any(axis=0))
            pw, ph = cols[-1] + 1 - cols[0], rows[-1] + 1 - rows[0]
            if (i, j) != (0, n - 1) and (ph < prior.shortest * height or pw < 0.1 * height):
                continue  # a sliver cut off a digit, not a digit
            if pw > prior.widest * height and (i, j) != (0, n - 1):
                continue  # several digits: only the uncut blob is read whatever its width
            try:
                x28 = normalize_digit(piece, config)
            except NoDigitError:
                continue
            box = (origin[1] + int(cols[0]), origin[0] + int(rows[0]),
                   origin[1] + int(cols[-1]) + 1, origin[0] + int(rows[-1]) + 1)
            found[(i, j)] = (x28, box, pw / max(ph, WIDTH_OF * (row_height or height)))
    if not found:
        return Lattice(n, {})
    keys = list(found)
    probs = model.predict_proba(np.stack([found[k][0] for k in keys]))
    return Lattice(n, {k: Piece(*found[k], p) for k, p in zip(keys, probs, strict=True)})


def best_reading(lattice: Lattice, prior: Segmentation = SEGMENTATION) -> tuple[float, list[Piece]]:
    """(log-likelihood, pieces left to right) of the best reading of a blob: each piece scores the
    log-probability of its label minus the digit cost and the width prior. Where the best reading cuts
    the blob, how many digits it holds is itself uncertain: each piece's `cut` is the share the best
    reading holds against the best readings with another number of digits (their scores as log-odds),
    so a thick 9 cut into a 0 and a 1 that read almost as well as the 9 is not sure of either."""
    n = lattice.cuts
    best = [[(-math.inf, [])] * n for _ in range(n)]  # best[j][k]: the best reading up to cut j in k pieces
    best[0][0] = (0.0, [])
    for (i, j), piece in sorted(lattice.pieces.items(), key=lambda kv: kv[0][1]):
        value = (math.log(float(piece.probabilities.max()) + 1e-12) - prior.digit
                 - prior.width * max(0.0, piece.width - prior.wide))
        for k in range(n - 1):
            if best[i][k][0] + value > best[j][k + 1][0]:
                best[j][k + 1] = (best[i][k][0] + value, best[i][k][1] + [piece])
    readings = [b for b in best[-1] if b[1]]
    if not readings:
        return -50.0, []
    score, pieces = max(readings, key=lambda b: b[0])
    if len(pieces) == 1:
        return score, pieces  # one digit: whether it is one is the model's and the row's to say
    share = 1.0 / sum(math.exp(CUT_SHARPNESS * (other - score)) for other, _ in readings)
    return score, [replace(p, cut=share) for p in pieces]


def read_blob(ink: np.ndarray, origin: tuple[int, int], height: int, model, config,
              row_height: int | None = None, prior: Segmentation = SEGMENTATION) -> tuple[float, list[Piece]]:
    """The best reading of one blob as one or more digits: `best_reading` of its `blob_lattice`."""
    return best_reading(blob_lattice(ink, origin, height, model, config, row_height, prior), prior)


def read(image, model=None, min_confidence: float | None = None, config: PreprocessConfig | None = None) -> Reading:
    """A row of handwritten digits -> Reading(text, digits), digits ordered left to right, boxes in
    the input image's pixels.

    Blobs are grouped by dynamic programming: a digit is one blob or up to three neighbouring blobs
    that (nearly) overlap horizontally (a broken stroke), and each group may be cut again where
    digits touch (`read_blob`); the grouping whose digits the model reads most confidently wins."""
    model = get_model(model)
    try:
        m = ink_map(image, config)
    except NoDigitError:
        return Reading([])
    fields = m.structure.fields if m.structure is not None else []
    if fields and holds_the_writing(m.ink, fields):
        return read_fields(m, fields, model, min_confidence, config)
    x = m.ink
    labels, groups = components(x)
    if not groups:
        return Reading([])
    row_height = max(box[3] - box[1] for box, _ in groups)
    digit = [box[3] - box[1] >= 0.5 * row_height for box, _ in groups]  # not a fleck
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
            # the row's other digits say how wide one digit is: a blob up to SPREAD x the widest
            # of them is one digit unless the model is sure otherwise; a lone blob, or one wider,
            # may hold several
            others = [b[0][2] - b[0][0] for k, b in enumerate(groups) if digit[k] and not start <= k < end]
            prior = CAUTIOUS if others and right - left <= SPREAD * max(others) else SEGMENTATION
            own = np.where(inside, x[top:bottom, left:right] / np.float32(255), 0.0)
            value, found = read_blob(own.astype(np.float32), (top, left), max(bottom - top, 1), model, config,
                                     row_height, prior)
            total = best[start][0] + value
            if found and total > best[end][0]:
                best[end] = (total, best[start][1] + found)
    digits = [as_digit(piece.probabilities, piece.image, m.to_input(*piece.box), min_confidence, piece.cut)
              for piece in best[-1][1]]
    # boxes found in part: more digits than boxes means some of their lines were read as digits
    doubt = "more digits than the printed boxes found: a box's side may be read as a 1" \
        if fields and len(digits) > len(fields) else None
    return Reading(digits, doubt=doubt)


def as_digit(p: np.ndarray, x28: np.ndarray, box: tuple[int, int, int, int], min_confidence: float | None,
             cut: float = 1.0) -> Digit:
    """One digit of a number, from the model's probabilities for it, how sure its blob's cut into
    digits is, and the box in input pixels. Its confidence is the chance that it is read right: its
    label's probability times its cut's."""
    confidence = float(p.max()) * cut
    return Digit(int(p.argmax()), confidence, decide(confidence, min_confidence), box, [float(v) for v in p], x28)


def read_fields(page: Page, fields: list[tuple[int, int, int, int]], model, min_confidence: float | None,
                config: PreprocessConfig | None) -> Reading:
    """A number written in printed boxes (a comb): each box holds one digit or none. Empty boxes between
    digits are gaps in `text`; empty boxes before the first digit and after the last are not part of
    the number."""
    cells: list[tuple[np.ndarray, tuple[int, int, int, int]] | None] = []
    for mask, (left, top, right, bottom) in zip(field_ink(page.ink, fields), fields, strict=True):
        if mask.sum() < FIELD_INK * (right - left) * (bottom - top):
            cells.append(None)  # an empty box: nothing, or only what is left of its lines
            continue
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        own = np.where(mask[y:y + h, x:x + w], page.ink[y:y + h, x:x + w], 0).astype(np.uint8)
        try:
            cells.append((normalize_digit(own, config), (x, y, x + w, y + h)))
        except NoDigitError:
            cells.append(None)
    filled = [k for k, c in enumerate(cells) if c is not None]
    if not filled:
        return Reading([])
    cells = cells[filled[0]:filled[-1] + 1]
    found = [c for c in cells if c is not None]
    probs = model.predict_proba(np.stack([x28 for x28, _ in found]))
    digits = [as_digit(p, x28, page.to_input(*box), min_confidence)
              for p, (x28, box) in zip(probs, found, strict=True)]
    gaps = tuple(k for k, c in enumerate(cells) if c is None)
    return Reading(digits, gaps, "an empty box inside the number: a digit may have been missed" if gaps else None)


def holds_the_writing(ink: np.ndarray, fields: list[tuple[int, int, int, int]]) -> bool:
    """Do the boxes found hold the writing? Where a comb's lines were found only in part, digits
    stand outside its boxes, and reading the boxes alone would lose them: the number is then read as
    if the boxes were not there. A blob counts as outside when less than half of it is in the boxes
    (widened by a fifth of their height, for strokes spilling over) and it is as tall as a third of a box;
    and a blob much taller than a box was written across boxes (squared paper's squares are no comb)."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(ink_mask(ink), connectivity=8)
    height = max(b - t for _, t, _, b in fields)
    inside = np.zeros(ink.shape, bool)
    pad = height // 5
    for left, top, right, bottom in fields:
        inside[max(0, top - pad):bottom + pad, max(0, left - pad):right + pad] = True
    share = np.bincount(labels[inside], minlength=n) / np.maximum(stats[:, cv2.CC_STAT_AREA], 1)
    tall = stats[:, cv2.CC_STAT_HEIGHT]
    outside = ((share < 0.5) & (tall >= height / 3)) | (tall > 1.4 * height)  # or written across boxes
    return not outside[1:].any()


def field_ink(ink: np.ndarray, fields: list[tuple[int, int, int, int]]) -> list[np.ndarray]:
    """Each box's ink, as a bool mask of the whole ink map. An ink blob belongs to the box holding most
    of it, so a stroke spilling over a box's side stays with its digit; a blob shared about evenly
    between boxes (two digits touching across a side) is cut at the side; specks are dropped."""
    n, labels = cv2.connectedComponents(ink_mask(ink), connectivity=8)
    share = np.stack([np.bincount(labels[top:bottom + 1, left:right].ravel(), minlength=n)
                      for left, top, right, bottom in fields]).astype(np.float64)  # [boxes, blobs]
    share[:, 0] = 0
    split = (share / np.maximum(share.sum(axis=0), 1.0) >= FIELD_SHARED).sum(axis=0) >= 2
    owner = np.where(split | (share.max(axis=0) == 0), -1, share.argmax(axis=0))
    masks = []
    for k, (left, _, right, _) in enumerate(fields):
        columns = np.zeros(ink.shape[1], bool)
        columns[max(0, left):right] = True
        mask = (owner == k)[labels] | (split[labels] & columns[None, :] & (labels > 0))
        mass = np.bincount(labels[mask], minlength=n)
        mask &= (mass >= FIELD_SPECK * mass.max(initial=0))[labels]  # specks: a line's remnant, a dot
        masks.append(mask)
    return masks
