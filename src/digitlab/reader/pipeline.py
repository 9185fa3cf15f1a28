"""The reader as a pipeline: one image, as a `Page`, through named steps in order

    decode -> page -> structure -> find -> normalize -> model -> decide

- decode (`image.load`): any file, bytes, PIL image or array -> grey (+ alpha) at a bounded size;
- page (`page_step`): polarity (ink made bright), lighting (uneven paper divided out), contrast (paper
  to 0, ink core to 255): the crafts are in `preprocess`;
- structure (`structure_step`): a form photographed at an angle turned square (`structure.skew`), its
  printed lines taken out and a comb's boxes found (`structure.remove_structure`);
- find: the digit's ink (`find_step`: the largest blob and those near it), or a row's digits
  (`recognize.read`: blobs, cuts between touching digits, or a comb's boxes);
- normalize (`preprocess.normalize_digit`): one digit's ink -> MNIST's 28x28;
- model and decide: `recognize` (probabilities, then "ok" or "unsure").

A picture that the first look calls blank is looked at again (`LOOKS`): each look is another way of
running the page step, tried in turn, and only a picture about to be called blank pays for more.
`PreprocessConfig` holds the user's settings only; which look found the ink is the Page's `look`.
`trace=True` records what each step produced (`Page.trace`), which `digitlab predict --explain` writes.

PIPELINE_VERSION names what a model is shown: a model trained through the reader (lab/augment.py)
records it in its card, and `infer.OnnxModel` warns when a model was trained through another version.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from digitlab.errors import NoDigitError

from .image import Loaded, load
from .preprocess import (
    SINGLE_WORK,
    SMALL_DIGIT,
    STROKE_WORK,
    PreprocessConfig,
    bounding_box,
    composite_alpha,
    could_be_paper,
    dark_ink,
    flatten_background,
    grainy,
    noise_level,
    normalize_digit,
    pick_digit,
    reduce_by,
    stretch_contrast,
    two_level,
    uneven_paper,
)
from .structure import Structure, deskew, might_have_lines, remove_structure, skew

PIPELINE_VERSION = 2  # 1: no structure step (models bundled up to 2026-11-26); 2: printed lines removed
MIN_SKEW = 1.0  # degrees: a form turned less than this is read as it is (the line rules allow about 1 degree)
FRAME_ASPECTS = (0.7, 0.45)  # a frame-filling digit's width is tried at these shares (see narrower_views)


@dataclass(frozen=True)
class Look:
    """One way of running the page step: flattening the lighting where the paper looks uneven or
    always, and the polarity as detected or the other one."""

    name: str
    flatten: str = "auto"  # auto: where uneven_paper finds the paper uneven | always
    polarity: str = "detected"  # detected | other


# The looks a picture of one digit is read with, in turn, before it is called blank:
# - as it is;
# - with the lighting flattened even though uneven_paper found the paper even: a soft shadow across a
#   corner of a photo, just under its bar, hid a bold 2;
# - a picture that could be a photo or a scan of paper, flattened and in the other polarity: a bright
#   patch of lit paper departs from the paper's level further than a dark digit does, and dark_ink takes
#   the patch for the ink (4 of 1,500 photo renderings).
# Tried and not kept (BENCHMARKS.md): the other polarity for every picture (it read the paper between
# strokes of clean pictures as digits, and cost a tenth of the Fashion-MNIST rejections); a clean
# picture without flattening (it read a 1 squashed into a square, but also a tenth of blank photos).
AS_IT_IS = Look("as it is")
FLATTENED = Look("lighting flattened", flatten="always")
OTHER_POLARITY = Look("other polarity", flatten="always", polarity="other")
LOOKS = (AS_IT_IS, FLATTENED, OTHER_POLARITY)


@dataclass
class Page:
    """One image on its way through the reader: the ink at the working size (uint8, paper 0, ink up to
    255), what the steps found, and how to get back to the input's pixels."""

    ink: np.ndarray
    scale: tuple[float, float]  # input pixels per working pixel (x, y)
    size: tuple[int, int]  # the input's (width, height)
    look: Look = AS_IT_IS
    structure: Structure | None = None  # the printed lines taken out of the ink, and the fields they mark
    picture: np.ndarray | None = None  # the ink of the whole picture, every blob but specks
    trace: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (step, what it made), when asked
    turn: np.ndarray | None = None  # 2x3 affine map from the working pixels to `ink`'s, where a form was deskewed

    def to_input(self, left: float, top: float, right: float, bottom: float) -> tuple[int, int, int, int]:
        """A (left, top, right, bottom) box in `ink`'s pixels -> the input image's pixels (clipped). A box
        in a deskewed page is turned back, and the box around it is given."""
        if self.turn is not None:
            back = cv2.invertAffineTransform(self.turn)
            corners = np.array([[left, top, 1], [right, top, 1], [left, bottom, 1], [right, bottom, 1]], np.float64)
            xs, ys = (corners @ back.T).T
            left, top, right, bottom = xs.min(), ys.min(), xs.max(), ys.max()
        sx, sy = self.scale
        w, h = self.size
        return (max(0, int(left * sx)), max(0, int(top * sy)),
                min(w, int(np.ceil(right * sx))), min(h, int(np.ceil(bottom * sy))))


# ---------------------------------------------------------------------------- the steps
def page_step(loaded: Loaded, c: PreprocessConfig, look: Look = AS_IT_IS, factor: int = 1) -> np.ndarray:
    """Decoded grey (+ alpha) -> ink-bright uint8, paper 0, at the working size reduced `factor` times.
    Raises NoDigitError when nothing stands out from the paper."""
    gray = loaded.gray
    if loaded.alpha is not None:
        gray = composite_alpha(gray, loaded.alpha)
    if factor > 1:  # padded to whole blocks, so that the working pixels stay exactly factor x factor
        h, w = gray.shape
        gray = cv2.copyMakeBorder(gray, 0, -h % factor, 0, -w % factor, cv2.BORDER_REPLICATE)
        gray = reduce_by(gray, factor)
    dark = c.polarity and dark_ink(gray) != (look.polarity == "other")
    if dark:
        gray = 255 - gray
    if grainy(gray):  # a grainy photo or scan: average the grain away
        gray = cv2.GaussianBlur(gray, (5, 5), 1.0)
    if c.flatten_background and (look.flatten == "always" or uneven_paper(gray)) and not two_level(gray):
        gray = flatten_background(gray, dark)
    if c.threshold:
        return stretch_contrast(gray, c.min_contrast)
    lo, hi = int(gray.min()), int(gray.max())
    if hi - lo < 255 * c.min_contrast:
        raise NoDigitError("no digit: the image is blank")
    return ((gray.astype(np.float32) - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


def structure_step(x: np.ndarray, c: PreprocessConfig) -> tuple[np.ndarray, Structure | None, np.ndarray | None]:
    """The ink without printed lines, the lines found (None where there are none), and the affine map
    by which a tilted form was turned square first (None: not turned). A picture without lines is
    returned as it is."""
    if not c.remove_lines or min(x.shape) < 16 or not might_have_lines(x):
        return x, None, None
    angle = skew(x)
    turned, turn = deskew(x, angle) if abs(angle) >= MIN_SKEW else (x, None)
    clean, structure = remove_structure(turned)
    if structure is None:
        return x, None, None
    if not clean.any():
        raise NoDigitError("no digit: only printed lines")
    return clean, structure, turn


def find_step(x: np.ndarray, c: PreprocessConfig, single: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(the ink to read, the whole picture's ink): specks dropped, and for a picture of one digit,
    stray marks away from it too (pick_digit)."""
    if not c.remove_specks:
        return x, None
    picture, digit = pick_digit(x, reach=0.3 if single else None)
    return (digit if single else picture), picture


def ink_map(image, config: PreprocessConfig | None = None, single: bool = False, factor: int = 1,
            look: Look = AS_IT_IS, trace: bool = False) -> Page:
    """Any image -> its Page after the page, structure and find steps, read with one look.
    Raises NoDigitError when blank. single: the image holds one digit."""
    c = config or PreprocessConfig()
    loaded = load(image)
    x = page_step(loaded, c, look, factor)
    steps = [("page", x)] if trace else []
    x, structure, turn = structure_step(x, c)
    if trace and structure is not None:
        steps += [("structure", np.maximum(structure.across, structure.down)), ("without lines", x)]
    x, picture = find_step(x, c, single)
    if trace:
        steps.append(("find", x))
    scale = (loaded.scale[0] * factor, loaded.scale[1] * factor)
    return Page(x, scale, loaded.size, look, structure, picture, steps, turn)


def looks(loaded: Loaded, c: PreprocessConfig) -> list[Look]:
    """The looks a picture of one digit may be read with (LOOKS), in turn. An ablation (the polarity or
    the flattening switched off) is read as configured only."""
    if not c.flatten_background:
        return [AS_IT_IS]
    if c.polarity and could_be_paper(loaded.gray):
        return list(LOOKS)
    return [AS_IT_IS, FLATTENED]


def first_ink_map(loaded: Loaded, c: PreprocessConfig, factor: int, trace: bool = False) -> Page:
    """The Page of an image of one digit read with the first of `looks` that finds ink. Only a picture
    about to be called blank pays for the later looks."""
    blank = NoDigitError("no digit: the image is blank")
    for look in looks(loaded, c):
        try:
            return ink_map(loaded, c, single=True, factor=factor, look=look, trace=trace)
        except NoDigitError as e:
            blank = e
    raise blank


def read_page(image, config: PreprocessConfig | None = None, trace: bool = False) -> tuple[np.ndarray, Page]:
    """Any image holding one digit -> (its uint8 [28, 28], its Page: the digit's ink at the working
    size, with the whole picture's ink, which `recognize.digit_count` looks at). Raises NoDigitError
    for a blank image."""
    c = config or PreprocessConfig()
    loaded = load(image)
    # Every step costs per pixel, and a digit's crop is cut to STROKE_WORK before its stroke is
    # measured anyway: so read a clean image (a canvas, a scan: most neighbouring pixels equal)
    # reduced to about SINGLE_WORK first, and again finer only when the digit turns out to be a small
    # part of it. Photos and textured paper are read as they are: reducing them averages the grain
    # away, and with it the noise floor that keeps a lamp's bright band or a shadow's edge out of the ink.
    clean = noise_level(loaded.gray) == 0
    factor = -(-max(loaded.gray.shape) // SINGLE_WORK) if clean else 1
    page = first_ink_map(loaded, c, factor, trace)
    top, left, bottom, right = bounding_box(page.ink)
    side = max(bottom - top, right - left)
    if factor > 1 and side < SMALL_DIGIT:
        finer = max(1, factor * side // STROKE_WORK)
        page = ink_map(loaded, c, single=True, factor=finer, look=page.look, trace=trace)
    x28 = normalize_digit(page.ink, c, bounding_box(page.ink))
    if trace:
        page.trace = [("decode", loaded.gray), *page.trace, ("normalize", x28)]
    return x28, page


def prepare(image, config: PreprocessConfig | None = None) -> tuple[np.ndarray, tuple[int, int, int, int], np.ndarray]:
    """Any image holding one digit -> (uint8 [28, 28], the digit's (left, top, right, bottom) box in the
    input image's pixels, the ink of the whole picture at the working size: every ink blob but specks,
    before the digit is picked out). Raises NoDigitError for a blank image."""
    x28, page = read_page(image, config)
    top, left, bottom, right = bounding_box(page.ink)
    return x28, page.to_input(left, top, right, bottom), page.picture if page.picture is not None else page.ink


def preprocess(image, config: PreprocessConfig | None = None) -> np.ndarray:
    """Any image holding one digit -> uint8 [28, 28]. Raises NoDigitError for a blank image."""
    return read_page(image, config)[0]


# ---------------------------------------------------------------------------- other views of a vetoed digit
def fills_frame(box: tuple[int, int, int, int], size: tuple[int, int]) -> bool:
    """Does the ink's (left, top, right, bottom) box touch all four sides of a (width, height) image?"""
    left, top, right, bottom = box
    w, h = size
    slack = max(w, h) // 100
    return left <= slack and top <= slack and right >= w - slack and bottom >= h - slack


def narrower_views(loaded: Loaded, box: tuple[int, int, int, int], config: PreprocessConfig | None = None,
                   aspects: tuple[float, ...] = FRAME_ASPECTS) -> list[np.ndarray]:
    """A digit whose ink touches all four sides of its image was likely stretched to the frame's shape
    (a cell cut from a form; collections that store digits size-normalized, aspect not kept): its own
    aspect is lost, and MNIST digits are narrower than tall (median width/height 0.8; a 1, 0.45). The
    28x28 views of such a digit (`box`: its ink, in `loaded`'s pixels) narrowed to each of `aspects`;
    [] when the ink leaves a margin."""
    if not fills_frame(box, loaded.size):
        return []
    c = config or PreprocessConfig()
    views = []
    for a in aspects:
        try:
            views.append(preprocess(loaded, replace(c, aspect=c.aspect * a)))
        except NoDigitError:  # nothing left of it this narrow (the deskew step can lose it)
            continue
    return views


def thinner_view(loaded: Loaded, config: PreprocessConfig | None = None, erode_share: float = 0.75) -> list[np.ndarray]:
    """A 1-bit image's strokes may be thicker than eroding half their average width can fix (a thick
    stroke stretched when its digit was squashed into its frame): the 28x28 view eroded up to
    `erode_share` of it. [] for other images: eroding grey images harder loses their thin strokes."""
    if loaded.alpha is not None or not two_level(loaded.gray):
        return []
    c = config or PreprocessConfig()
    try:
        return [preprocess(loaded, replace(c, erode_share=max(c.erode_share, erode_share)))]
    except NoDigitError:
        return []
