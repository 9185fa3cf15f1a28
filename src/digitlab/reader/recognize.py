"""Reading people's images: one digit (`classify`) or a row of digits (`read`), with honest confidence.

The model sees only what `preprocess` makes of the image. A row of digits is cut into digits by
connected components; pieces that overlap horizontally are one digit drawn in several strokes (the
hat of a 5, a 4 in two strokes), and a blob too wide for one digit is tried at several cut points,
keeping the reading the model is most confident in. Confidence is temperature-scaled (the model
card's `temperature`, fitted by `fit_temperature` on held-out data, applied by `infer.OnnxModel`),
so 0.9 means right about 9 times in 10.
No torch here: the model is any object with `predict_proba(uint8 [N, 28, 28]) -> [N, 10]`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from digitlab.errors import NoDigitError
from digitlab.reader.infer import OnnxModel, bundled
from digitlab.reader.preprocess import PreprocessConfig, ink_map, normalize_digit, preprocess, stroke_width

# Segmentation prior, in log-likelihood units: every digit read costs DIGIT_COST, so cutting a
# digit in two must buy more confidence than that; a digit much wider than tall is rare (MNIST:
# 1% beyond 1.4), so each unit of width beyond 1.1 x the height costs WIDTH_COST.
DIGIT_COST = 1.5
WIDTH_COST = 4.0
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
    box: tuple[int, int, int, int]  # left, top, right, bottom in the (size-limited) image's pixels
    probabilities: list[float] = field(repr=False, default_factory=list)
    image: np.ndarray | None = field(repr=False, default=None)  # the 28x28 the model saw

    def as_dict(self) -> dict:
        return {"label": self.label, "confidence": round(self.confidence, 4), "box": list(self.box)}


def as_dict(result: dict) -> dict:
    """A `classify` result as JSON-ready values, rounded to 4 decimals (what the CLI and the API print)."""
    probabilities = result["probabilities"]
    return {"label": result["label"], "status": result["status"], "confidence": round(result["confidence"], 4),
            "probabilities": None if probabilities is None else [round(p, 4) for p in probabilities]}


def classify(image, model=None, min_confidence: float = 0.0, config: PreprocessConfig | None = None) -> dict:
    """One digit: {"label", "status", "confidence", "probabilities", "image"}. label is None for a
    blank image (status "no digit"), ink unlike any digit ("not a digit") or a confidence below
    `min_confidence` ("unsure")."""
    model = get_model(model)
    try:
        x28 = preprocess(image, config)
    except NoDigitError:
        return {"label": None, "status": "no digit", "confidence": 0.0, "probabilities": None, "image": None}
    p = model.predict_proba(x28[None])[0]
    label, confidence = int(p.argmax()), float(p.max())
    status = "not a digit" if not looks_like_a_digit(x28) else "ok" if confidence >= min_confidence else "unsure"
    return {"label": label if status == "ok" else None, "status": status, "confidence": confidence,
            "probabilities": [float(v) for v in p], "image": x28}


def looks_like_a_digit(x28: np.ndarray) -> bool:
    """Ink statistics a handwritten digit stays within after preprocessing (above the 99.5th percentile
    of MNIST and of the test corpus): a blob, a texture or a filled shape covers too much or is too
    thick. A cheap veto before the model's confidence, which is high on many non-digits."""
    ink = x28 / 255.0
    return float((ink > 0.5).mean()) <= MAX_FILL and stroke_width(ink) <= MAX_STROKE


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
    labels, _ = ndimage.label(x > 0, structure=np.ones((3, 3)))
    blobs = sorted(([s[1].start, s[0].start, s[1].stop, s[0].stop], [i])
                   for i, s in enumerate(ndimage.find_objects(labels), 1) if s)
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


class _Scorer:
    """Classifies column ranges of one candidate's ink, caching each range (the search revisits them)."""

    def __init__(self, ink: np.ndarray, origin: tuple[int, int], model, config: PreprocessConfig | None) -> None:
        self.ink, self.origin, self.model, self.config, self.cache = ink, origin, model, config, {}

    def __call__(self, left: int, right: int):
        if (left, right) not in self.cache:
            piece = self.ink[:, left:right]
            rows = np.flatnonzero(piece.any(axis=1))
            top, x0 = self.origin
            try:
                x28 = normalize_digit(piece, self.config)
                p = self.model.predict_proba(x28[None])[0]
                box = (x0 + left, top + int(rows[0]), x0 + right, top + int(rows[-1]) + 1)
            except NoDigitError:
                x28, p, box = None, None, None
            self.cache[(left, right)] = (x28, p, box)
        return self.cache[(left, right)]


def cut_candidates(profile: np.ndarray, low: int, high: int, spacing: int, most: float,
                   count: int = 4) -> list[int]:
    """Columns where the ink is thinnest, at least `spacing` apart, holding at most `most` ink:
    touching digits meet in about one stroke, while a cut through one digit (a 0, a wide 5) crosses two."""
    smooth = np.convolve(profile, np.ones(3) / 3, mode="same")
    cuts: list[int] = []
    for c in np.argsort(smooth[low:high], kind="stable") + low:
        if smooth[c] > most:
            break
        if all(abs(int(c) - d) >= spacing for d in cuts):
            cuts.append(int(c))
        if len(cuts) == count:
            break
    return sorted(cuts)


def best_split(score: _Scorer, left: int, right: int, depth: int = 0) -> tuple[float, list[tuple[int, int]]]:
    """(log-likelihood, [(left, right), ...]) of the most confident reading of columns left:right.

    A piece much wider than tall is probably several touching digits: its unsplit reading is
    penalized by its excess width, and cuts at the thinnest columns are tried recursively."""
    _, p, box = score(left, right)
    if p is None:
        return -50.0, []
    height, width = box[3] - box[1], right - left
    whole = math.log(float(p.max()) + 1e-12) - DIGIT_COST - WIDTH_COST * max(0.0, width / height - 1.1)
    best = (whole, [(left, right)])
    low, high = int(0.3 * height), width - int(0.3 * height)
    if width < 0.9 * height or depth >= 4 or high <= low:
        return best
    profile = score.ink[:, left:right].sum(axis=0)
    for cut in cut_candidates(profile, low, high, max(1, height // 6), 1.8 * stroke_width(score.ink)):
        a = best_split(score, left, left + cut, depth + 1)
        b = best_split(score, left + cut, right, depth + 1)
        if a[1] and b[1] and a[0] + b[0] > best[0]:
            best = (a[0] + b[0], a[1] + b[1])
    return best


def read(image, model=None, min_confidence: float = 0.0, config: PreprocessConfig | None = None) -> Reading:
    """A row of handwritten digits -> Reading(text, digits), digits ordered left to right.

    Blobs are grouped by dynamic programming: a digit is one blob or up to three neighbouring blobs
    that (nearly) overlap horizontally (a broken stroke), and each group may be split again where
    digits touch; the grouping whose digits the model reads most confidently wins."""
    model = get_model(model)
    try:
        x = ink_map(image, config)
    except NoDigitError:
        return Reading("", [])
    labels, groups = components(x)
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
            own = np.where(np.isin(labels[top:bottom, left:right], ids), x[top:bottom, left:right], 0.0)
            score = _Scorer(own, (top, left), model, config)
            value, pieces = best_split(score, 0, right - left)
            total = best[start][0] + value
            if pieces and total > best[end][0]:
                best[end] = (total, best[start][1] + [score(a, b) for a, b in pieces])
    digits = []
    for x28, p, box in best[-1][1]:
        label, confidence = int(p.argmax()), float(p.max())
        digits.append(Digit(label if confidence >= min_confidence else None, confidence, box,
                            [float(v) for v in p], x28))
    text = "".join("?" if d.label is None else str(d.label) for d in digits)
    return Reading(text, digits)
