"""A realistic, deterministic suite and corpus of "people's images" for testing and benchmarking the reader.

Everything is generated from a seed: MNIST test digits (upsampled smoothly) and digits drawn here
from stroke templates, put on canvases the way people's images come: small in a corner or filling
the frame, thin pen or marker, light-on-dark canvas exports or dark ink on coloured, textured paper
lit unevenly, with shadows, blur, noise, JPEG compression, rotation, transparent backgrounds; rows
of 2-10 digits, some touching; blank canvases; noise, scribbles and letters that are not digits.

    samples = make_corpus(images, labels, n_single=200, n_strings=60, n_blank=20, n_other=40, seed=0)
    sample.kind in {"single", "string", "touching", "blank", "other"}; sample.data is what a user
    would pass (encoded file bytes, a PIL image or a numpy array); sample.truth the expected text.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

from digitlab.testing import paper


@dataclass
class Sample:
    kind: str
    data: object  # bytes (an encoded file), PIL.Image or np.ndarray
    truth: str  # the digits, "" for blank and non-digit images
    style: str = ""


# ---------------------------------------------------------------------------- one digit's ink
def _ellipse(cx, cy, rx, ry, t0, t1, n=24):
    ts = np.radians(np.linspace(t0, t1, n))
    return [(cx + rx * math.cos(t), cy + ry * math.sin(t)) for t in ts]


# strokes in a unit box, x right, y down; angles in degrees with -90 at the top
TEMPLATES = {
    0: [_ellipse(0.5, 0.5, 0.3, 0.45, 0, 360)],
    1: [[(0.55, 0.04), (0.5, 0.96)]],  # drawn_digit adds the flag half of the time
    2: [_ellipse(0.5, 0.3, 0.28, 0.25, -180, 20) + [(0.22, 0.95), (0.82, 0.95)]],
    3: [_ellipse(0.48, 0.27, 0.25, 0.23, -160, 90) + _ellipse(0.48, 0.72, 0.28, 0.23, -90, 160)],
    4: [[(0.66, 0.96), (0.62, 0.04), (0.18, 0.66), (0.86, 0.66)]],
    5: [[(0.78, 0.05), (0.32, 0.05), (0.28, 0.45)] + _ellipse(0.5, 0.67, 0.28, 0.28, -125, 150)],
    6: [_ellipse(0.6, 0.62, 0.38, 0.56, -75, -180) + _ellipse(0.48, 0.72, 0.26, 0.23, 180, 540)],
    7: [[(0.2, 0.05), (0.82, 0.05), (0.42, 0.96)]],
    8: [_ellipse(0.5, 0.27, 0.22, 0.22, 90, 450), _ellipse(0.5, 0.72, 0.27, 0.23, -90, 270)],
    9: [_ellipse(0.5, 0.3, 0.26, 0.24, 0, 360), [(0.76, 0.3), (0.7, 0.96)]],
}


def drawn_digit(digit: int, size: int, rng: np.random.Generator, width: float | None = None) -> np.ndarray:
    """A digit drawn with a round pen from its stroke template, jittered and slanted: float [size, size]."""
    strokes = TEMPLATES[digit]
    if digit == 1 and rng.random() < 0.5:  # the flag many people write
        strokes = [[(0.38, 0.2)] + strokes[0]]
    return draw_strokes(strokes, size, rng, width)


def draw_strokes(strokes, size: int, rng: np.random.Generator, width: float | None = None) -> np.ndarray:
    """Polylines in a unit box drawn with a round pen (constant width, round caps and joints), jittered
    and slanted, anti-aliased: float [size, size]."""
    width = width if width is not None else rng.uniform(0.05, 0.16)
    slant, squeeze = rng.uniform(-0.2, 0.2), rng.uniform(0.75, 1.1)
    scale = 2  # draw at twice the size, then reduce: anti-aliased edges
    canvas = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    margin = 0.08
    for stroke in strokes:
        pts = np.array(stroke) + rng.normal(0, 0.012, (len(stroke), 2))
        x = 0.5 + (pts[:, 0] - 0.5) * squeeze + slant * (0.5 - pts[:, 1])
        y = pts[:, 1]
        xy = [((margin + (1 - 2 * margin) * a) * size * scale, (margin + (1 - 2 * margin) * b) * size * scale)
              for a, b in zip(x, y, strict=True)]
        pen = max(1, round(width * size * scale))
        draw.line(xy, fill=255, width=pen, joint="curve")
        for px, py in xy:  # round caps and joints
            draw.ellipse((px - pen / 2, py - pen / 2, px + pen / 2, py + pen / 2), fill=255)
    return np.asarray(canvas.resize((size, size), Image.BOX), np.float32) / 255


def mnist_digit(image28: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """An MNIST digit upsampled smoothly to size x size, sometimes made thicker or thinner."""
    big = np.asarray(Image.fromarray(image28).resize((size, size), Image.BICUBIC), np.float32) / 255
    big = np.clip((big - 0.25) * 1.6, 0, 1)  # crisper edges, like a pen rather than a blur
    style = rng.integers(3)
    k = max(1, size // 28)
    if style == 1:
        big = cv2.dilate(big, np.ones((k + 1, k + 1), np.uint8))
    elif style == 2 and size >= 56:
        big = cv2.erode(big, np.ones((k // 2 + 1, k // 2 + 1), np.uint8))
    return big


def rotate(ink: np.ndarray, degrees: float) -> np.ndarray:
    return np.asarray(Image.fromarray(ink, "F").rotate(degrees, Image.BILINEAR, expand=True), np.float32)


# ---------------------------------------------------------------------------- canvases
def _color(rng, light: bool) -> np.ndarray:
    if light:
        return rng.uniform(0.75, 1.0, 3) * rng.uniform(0.85, 1.0)
    return rng.uniform(0.0, 0.3, 3)


def render(ink: np.ndarray, rng: np.random.Generator, canvas: tuple[int, int] | None = None,
           style: str | None = None, noise: float | None = None, quality: int | None = None) -> tuple[object, str]:
    """Put an ink map (float 0-1, 1 = ink) on a canvas in one of the styles people's images come in.
    Returns (data a user would pass, style name). `noise` (sigma, 0-1 scale) and `quality` (JPEG)
    override the photo/scan style's random ones."""
    style = style or str(rng.choice(["canvas", "canvas_inverted", "rgba", "paper", "photo", "photo", "scan"]))
    h, w = ink.shape
    if canvas is None:
        f = rng.uniform(1.1, max(1.2, min(3.0, 900 / max(h, w))))  # canvases up to ~900 px: fast to make
        canvas = (int(h * f * rng.uniform(0.9, 1.2)), int(w * f * rng.uniform(0.9, 1.3)))
    H, W = max(canvas[0], h + 2), max(canvas[1], w + 2)
    top, left = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    a = np.zeros((H, W), np.float32)
    a[top:top + h, left:left + w] = ink
    if style == "rgba":  # canvas export: coloured or black strokes, transparent background
        color = _color(rng, light=bool(rng.integers(2)))
        rgba = np.dstack([np.broadcast_to(color, (H, W, 3)), a]) * 255
        return _encode(Image.fromarray(rgba.round().astype(np.uint8), "RGBA"), "PNG", compress_level=1), style
    if style in ("canvas", "canvas_inverted"):  # flat digital drawing
        light_ink = style == "canvas_inverted"
        paper, color = _color(rng, not light_ink), _color(rng, light_ink)
        img = paper * (1 - a[..., None]) + color * a[..., None]
        fmt = str(rng.choice(["PNG", "BMP", "WEBP", "GIF"]))
        options = {"compress_level": 1} if fmt == "PNG" else {"lossless": True} if fmt == "WEBP" else {}
        return _encode(_to_image(img, gray=bool(rng.integers(2))), fmt, **options), style
    # paper / photo / scan: dark ink on light, coloured paper, uneven light, texture, noise, JPEG
    paper = _color(rng, True)
    ink_color = rng.uniform(0.0, 0.35, 3) * np.array([1, 1, 1]) + np.array([0, 0, rng.uniform(0, 0.3)])
    texture = blur(rng.normal(0, 1, (H, W)).astype(np.float32), rng.uniform(1, 3))
    texture *= rng.uniform(0.01, 0.05) / (texture.std() + 1e-6)
    img = paper * (1 - a[..., None]) + ink_color * a[..., None] + texture[..., None]
    if style in ("photo", "scan"):
        yy, xx = np.mgrid[0:H, 0:W] / max(H, W)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = (np.cos(angle) * xx + np.sin(angle) * yy)
        light = 1 - rng.uniform(0.1, 0.45) * (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
        if style == "photo" and rng.random() < 0.6:  # a soft shadow across part of the sheet
            edge = rng.uniform(0.2, 0.8)
            across = xx * np.cos(angle + 1) + yy * np.sin(angle + 1) - edge
            shadow = 1 - rng.uniform(0.15, 0.35) / (1 + np.exp(-across * 25))
            light = light * shadow
        img = img * light[..., None]
        if style == "photo":
            img = blur(img.astype(np.float32), rng.uniform(0.3, 1.2))
        sigma = noise if noise is not None else rng.uniform(0.005, 0.03)
        img = img + rng.normal(0, sigma, img.shape)
    image = _to_image(img, gray=style == "scan")
    if style == "paper":
        return _encode(image, "PNG", compress_level=1), style
    return _encode(image, "JPEG", quality=quality or int(rng.integers(35, 90))), style


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(a, (0, 0), sigma)


def _to_image(img: np.ndarray, gray: bool) -> Image.Image:
    rgb = Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8), "RGB")
    return rgb.convert("L") if gray else rgb


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


# ---------------------------------------------------------------------------- samples
def one_digit(images, labels, rng) -> tuple[np.ndarray, str]:
    """A random digit's ink at a random size (30-600 px), from MNIST or drawn, rotated up to 15 deg."""
    size = int(np.exp(rng.uniform(np.log(30), np.log(600))))
    if rng.random() < 0.6:
        i = int(rng.integers(len(images)))
        ink, truth = mnist_digit(images[i], size, rng), str(int(labels[i]))
    else:
        d = int(rng.integers(10))
        ink, truth = drawn_digit(d, size, rng), str(d)
    if rng.random() < 0.5:
        ink = rotate(ink, rng.uniform(-15, 15))
    return ink, truth


def row_digit(images, labels, rng, height: int, mnist_share: float) -> tuple[np.ndarray, str]:
    """One digit of a row, `height` px tall, from MNIST (a `mnist_share` of the time) or drawn with a
    pen, cut to its ink's columns: (ink, its text)."""
    if rng.random() < mnist_share:
        i = int(rng.integers(len(images)))
        ink, text = mnist_digit(images[i], height, rng), str(int(labels[i]))
    else:
        d = int(rng.integers(10))
        ink, text = drawn_digit(d, height, rng, width=rng.uniform(0.06, 0.12)), str(d)
    cols = np.flatnonzero(ink.max(axis=0) > 0.1)
    return (ink[:, cols[0]:cols[-1] + 1] if cols.size else ink), text


def digit_row(images, labels, rng, n: int, touching: bool) -> tuple[np.ndarray, str]:
    """n digits side by side with varied spacing (overlapping a little when `touching`)."""
    height = int(rng.integers(40, 110))
    pieces, text = [], ""
    for _ in range(n):
        ink, t = row_digit(images, labels, rng, height, mnist_share=0.6)
        pieces.append(ink)
        text += t
    gaps = (rng.uniform(-0.12, -0.03, n - 1) if touching else rng.uniform(0.15, 0.6, n - 1)) * height
    width = sum(p.shape[1] for p in pieces) + int(max(0, gaps.sum())) + 2 * height
    row = np.zeros((height + 10, width), np.float32)
    x = 5
    for i, p in enumerate(pieces):
        dy = int(rng.integers(0, 10))
        region = row[dy:dy + p.shape[0], x:x + p.shape[1]]
        np.maximum(region, p[:region.shape[0], :region.shape[1]], out=region)
        x += p.shape[1] + (int(gaps[i]) if i < n - 1 else 0)
    cols = np.flatnonzero(row.max(axis=0) > 0)
    return row[:, : cols[-1] + 2], text


def blank(rng) -> object:
    """An empty canvas: flat, transparent, or paper with light, texture and noise."""
    H, W = int(rng.integers(28, 500)), int(rng.integers(28, 500))
    style = str(rng.choice(["canvas", "canvas_inverted", "rgba", "paper", "photo", "scan"]))
    return render(np.zeros((1, 1), np.float32), rng, canvas=(H, W), style=style)[0]


# capital letters as pen strokes (no fonts anywhere in the corpus): none a person would also write as a digit
LETTERS = {
    "A": [[(0.1, 1), (0.5, 0), (0.9, 1)], [(0.27, 0.6), (0.73, 0.6)]],
    "E": [[(0.8, 0), (0.2, 0), (0.2, 1), (0.8, 1)], [(0.2, 0.5), (0.7, 0.5)]],
    "F": [[(0.8, 0), (0.2, 0), (0.2, 1)], [(0.2, 0.5), (0.7, 0.5)]],
    "H": [[(0.2, 0), (0.2, 1)], [(0.8, 0), (0.8, 1)], [(0.2, 0.5), (0.8, 0.5)]],
    "K": [[(0.2, 0), (0.2, 1)], [(0.8, 0), (0.2, 0.55)], [(0.38, 0.42), (0.85, 1)]],
    "M": [[(0.1, 1), (0.15, 0), (0.5, 0.6), (0.85, 0), (0.9, 1)]],
    "N": [[(0.2, 1), (0.2, 0), (0.8, 1), (0.8, 0)]],
    "V": [[(0.1, 0), (0.5, 1), (0.9, 0)]],
    "W": [[(0.05, 0), (0.25, 1), (0.5, 0.35), (0.75, 1), (0.95, 0)]],
    "X": [[(0.15, 0), (0.85, 1)], [(0.85, 0), (0.15, 1)]],
    "Y": [[(0.1, 0), (0.5, 0.5), (0.9, 0)], [(0.5, 0.5), (0.5, 1)]],
    "m": [[(0.1, 1), (0.1, 0.35)], [(0.1, 0.5)] + [(0.3 + 0.2 * np.cos(t), 0.5 - 0.15 * np.sin(t))
                                                    for t in np.linspace(np.pi, 0, 8)] + [(0.5, 1)],
          [(0.5, 0.5)] + [(0.7 + 0.2 * np.cos(t), 0.5 - 0.15 * np.sin(t)) for t in np.linspace(np.pi, 0, 8)]
          + [(0.9, 1)]],
}


def not_a_digit(rng) -> tuple[np.ndarray, str]:
    """Ink that is not a digit: random noise, a scribble or a letter (drawn with a pen)."""
    kind = str(rng.choice(["noise", "scribble", "letter"]))
    size = int(rng.integers(60, 300))
    if kind == "noise":
        return (rng.random((size, size)) < rng.uniform(0.05, 0.4)).astype(np.float32), kind
    if kind == "scribble":
        canvas = Image.new("L", (size, size), 0)
        pts = [tuple(p) for p in rng.uniform(0.1, 0.9, (int(rng.integers(5, 14)), 2)) * size]
        ImageDraw.Draw(canvas).line(pts, fill=255, width=max(2, size // 15), joint="curve")
        return np.asarray(canvas, np.float32) / 255, kind
    letter = str(rng.choice(list(LETTERS)))
    return draw_strokes(LETTERS[letter], size, rng, rng.uniform(0.06, 0.14)), kind


def blanks_and_others(rng: np.random.Generator, n_blank: int, n_other: int) -> list[Sample]:
    """Blank canvases ("no digit") and ink that is not a digit, rendered like the digits."""
    samples = [Sample("blank", blank(rng), "", "blank") for _ in range(n_blank)]
    for _ in range(n_other):
        ink, kind = not_a_digit(rng)
        data, _ = render(ink, rng)
        samples.append(Sample("other", data, "", kind))
    return samples


def make_corpus(images: np.ndarray, labels: np.ndarray, n_single: int = 200, n_strings: int = 60,
                n_touching: int = 30, n_blank: int = 20, n_other: int = 40, seed: int = 0) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = []
    for _ in range(n_single):
        ink, truth = one_digit(images, labels, rng)
        data, style = render(ink, rng)
        samples.append(Sample("single", data, truth, style))
    for kind, count in (("string", n_strings), ("touching", n_touching)):
        for _ in range(count):
            ink, truth = digit_row(images, labels, rng, int(rng.integers(2, 11)), kind == "touching")
            data, style = render(ink, rng, canvas=(int(ink.shape[0] * rng.uniform(1.2, 2.5)),
                                                   int(ink.shape[1] * rng.uniform(1.05, 1.3))))
            samples.append(Sample(kind, data, truth, style))
    return samples + blanks_and_others(rng, n_blank, n_other)


# ---------------------------------------------------------------------------- the realistic suite
# Each category is one way real digit images differ from MNIST (issue 10). All of it is generated
# from MNIST *test* digits and procedural pen strokes: nothing here may be tuned on other handwriting.
SINGLE_CATEGORIES = ("frame16_gray", "frame16_1bit_thick", "bit32", "lowres", "pen_mnist", "pen_drawn",
                     "photo", "mixed")
ROW_CATEGORIES = ("row", "pair_touching", "row_touching")
# where people write (testing/paper.py): one digit in a box, on ruled or squared paper, on a printed
# line; a number in a row of boxes (a comb), and a number photographed under strongly falling light
FORM_CATEGORIES = ("box", "ruled", "squared", "underline")
FORM_ROW_CATEGORIES = ("comb", "photo_number")


def form_sample(images: np.ndarray, labels: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """Digits (MNIST test digits, upsampled like `mnist_digit`) handwritten on paper of `kind`
    (paper.KINDS) and photographed or scanned: (file bytes, the digits' text). A comb holds 3-8
    digits, a photographed number 2-6."""
    n = int(rng.integers(3, 9)) if kind == "comb" else int(rng.integers(2, 7)) if kind == "photo_number" else 1
    height = int(rng.integers(30, 130))
    picks = rng.integers(len(images), size=n)
    inks = [mnist_digit(images[i], height, rng) for i in picks]
    page = paper.on_paper(inks, kind, rng)
    return paper.photograph(page, rng, strong_light=kind == "photo_number"), "".join(str(int(labels[i])) for i in picks)


def ink_crop(image28: np.ndarray, level: int = 0) -> np.ndarray:
    """The digit cut to its ink's bounding box, float 0-1."""
    rows, cols = np.flatnonzero(image28.max(1) > level), np.flatnonzero(image28.max(0) > level)
    return image28[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].astype(np.float32) / 255


def _scan(ink: np.ndarray, rng, bits: bool, upscale: int) -> bytes:
    """A small scan (ink 0-1) as a file: dark on white mostly, blown up blocky or smooth sometimes."""
    a = ink if rng.random() < 0.25 else 1 - ink  # a quarter white-on-black, as some collections store them
    if bits:
        a = (a > 0.5).astype(np.float32)
    if upscale > 1:
        interp = cv2.INTER_NEAREST if bits or rng.random() < 0.5 else cv2.INTER_CUBIC
        a = np.clip(cv2.resize(a, (a.shape[1] * upscale, a.shape[0] * upscale), interpolation=interp), 0, 1)
    image = Image.fromarray((a * 255 + 0.5).astype(np.uint8), "L")
    return _encode(image.convert("1") if bits and upscale == 1 else image, "PNG")


def frame_filling(image28: np.ndarray, rng, side: int = 16, bits: bool = False, thick: bool = False) -> bytes:
    """A digit cut to its ink and resized to side x side, aspect not kept (a cell cut from a form;
    how several public collections store digits), optionally thickened and binarized, then stored
    as is or upscaled 7x."""
    x = image28
    if thick:
        x = cv2.dilate(x, np.ones((3, 3), np.uint8))
    ink = cv2.resize(ink_crop(x, 40), (side, side), interpolation=cv2.INTER_AREA)
    ink = ink / max(float(ink.max()), 1e-6)
    return _scan(ink, rng, bits, 7 if rng.random() < 0.7 else 1)


def bitmap32(image28: np.ndarray, rng) -> bytes:
    """A 32x32 1-bit bitmap, the digit scaled to fill its height (aspect kept), centred."""
    ink = ink_crop(image28, 40)
    h, w = ink.shape
    f = 30 / max(h, w)
    small = cv2.resize(ink, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    a = np.zeros((32, 32), np.float32)
    top, left = (32 - small.shape[0]) // 2, (32 - small.shape[1]) // 2
    a[top:top + small.shape[0], left:left + small.shape[1]] = small / max(float(small.max()), 1e-6)
    return _scan(a, rng, True, int(rng.choice([1, 4, 8])))


def low_resolution(image28: np.ndarray, rng) -> bytes:
    """An 8x8-15x15 scan (aspect kept, a pixel of margin), blown up blocky or smooth to 100-200 px."""
    side = int(rng.integers(8, 16))
    ink = ink_crop(image28, 40)
    h, w = ink.shape
    f = (side - 2) / max(h, w)
    small = cv2.resize(ink, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    a = np.zeros((side, side), np.float32)
    top, left = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    a[top:top + small.shape[0], left:left + small.shape[1]] = small / max(float(small.max()), 1e-6)
    return _scan(a, rng, False, max(2, int(rng.integers(100, 200)) // side))


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a boolean image to one-pixel-wide lines (the pen's trajectory)."""
    m = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = [np.roll(np.roll(m, -dy, 0), -dx, 1) for dy, dx in
                 ((-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1), (-1, -1))]  # P2..P9
            b = sum(p)
            a = sum(((p[i] == 0) & (p[(i + 1) % 8] == 1)).astype(np.uint8) for i in range(8))
            if step == 0:
                c1, c2 = p[0] * p[2] * p[4], p[2] * p[4] * p[6]
            else:
                c1, c2 = p[0] * p[2] * p[6], p[0] * p[4] * p[6]
            remove = (m == 1) & (b >= 2) & (b <= 6) & (a == 1) & (c1 == 0) & (c2 == 0)
            if remove.any():
                m[remove] = 0
                changed = True
        if not changed:
            return m[1:-1, 1:-1].astype(bool)


def pen_trajectory(image28: np.ndarray, size: int, width: float) -> np.ndarray:
    """An MNIST digit's trajectory (its skeleton at 4x) redrawn the way a canvas draws: constant
    pen `width` in pixels, round caps and joints, anti-aliased. Float [size, size], ink 1."""
    big = cv2.resize(image28, (112, 112), interpolation=cv2.INTER_CUBIC) > 100
    ys, xs = np.nonzero(skeleton(big))
    ss = 4  # supersampling
    f = size * ss / 112
    canvas = np.zeros((size * ss, size * ss), np.uint8)
    on = set(zip(ys.tolist(), xs.tolist(), strict=True))
    thickness = max(1, round(width * ss))
    for y, x in on:
        p = (round(x * f), round(y * f))
        cv2.circle(canvas, p, thickness // 2, 255, -1, cv2.LINE_AA)
        for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
            if (y + dy, x + dx) in on:
                cv2.line(canvas, p, (round((x + dx) * f), round((y + dy) * f)), 255, thickness, cv2.LINE_AA)
    return cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255


def pen_canvas(ink: np.ndarray, rng, side: int = 280) -> bytes:
    """A web drawing pad's export: the digit on a side x side canvas, white on black, black on white
    or coloured on transparent."""
    h, w = ink.shape
    a = np.zeros((side, side), np.float32)
    top, left = int(rng.integers(0, side - h + 1)), int(rng.integers(0, side - w + 1))
    a[top:top + h, left:left + w] = ink
    style = rng.integers(3)
    if style == 2:
        color = rng.uniform(0, 0.4, 3) if rng.random() < 0.7 else rng.uniform(0.6, 1, 3)
        rgba = np.dstack([np.broadcast_to(color, (side, side, 3)), a]) * 255
        return _encode(Image.fromarray((rgba + 0.5).astype(np.uint8), "RGBA"), "PNG")
    g = a if style == 0 else 1 - a
    return _encode(Image.fromarray((g * 255 + 0.5).astype(np.uint8), "L"), "PNG")


def phone_photo(image28: np.ndarray, rng, canvas: tuple[int, int] = (3000, 4000), digit: int = 600) -> bytes:
    """A phone photo (12 MP by default) of a digit on paper: lamp gradient, a shadow, noise, JPEG.
    Made in uint8 with the lighting computed small, so a 12 MP sample costs well under a second."""
    H, W = canvas
    ink = cv2.resize(ink_crop(image28), (digit * 3 // 4, digit), interpolation=cv2.INTER_CUBIC).clip(0, 1)
    top, left = int(rng.integers(0, H - ink.shape[0])), int(rng.integers(0, W - ink.shape[1]))
    yy, xx = np.mgrid[0:48, 0:64] / 64.0
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy
    light = 1 - rng.uniform(0.1, 0.4) * (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
    across = xx * np.cos(angle + 1) + yy * np.sin(angle + 1) - rng.uniform(0.3, 0.9)
    light = light * (1 - rng.uniform(0.15, 0.3) / (1 + np.exp(-across * 25)))
    light = cv2.resize(light.astype(np.float32), (W, H), interpolation=cv2.INTER_LINEAR)
    paper = np.full((H, W), rng.uniform(0.8, 0.95), np.float32)
    paper[top:top + ink.shape[0], left:left + ink.shape[1]] -= ink * rng.uniform(0.55, 0.75)
    noise = rng.normal(0, rng.uniform(0.01, 0.04), (H // 4, W // 4)).astype(np.float32)
    gray = paper * light + cv2.resize(noise, (W, H), interpolation=cv2.INTER_NEAREST)
    u8 = (np.clip(gray, 0, 1) * 255 + 0.5).astype(np.uint8)
    tint = rng.uniform(0.9, 1.0, 3)
    rgb = np.dstack([(u8 * t).astype(np.uint8) for t in tint])
    return _encode(Image.fromarray(rgb, "RGB"), "JPEG", quality=int(rng.integers(70, 92)))


def touching_row(images, labels, rng, n: int) -> tuple[np.ndarray, str]:
    """n digits side by side, each pushed left until its ink really touches its neighbour's (then
    0-2 px more): the strokes overlap, as digits written too close do."""
    height = int(rng.integers(40, 110))
    row = np.zeros((height + 10, n * 2 * height), np.float32)
    text, right = "", 5
    for k in range(n):
        p, t = row_digit(images, labels, rng, height, mnist_share=0.7)
        dy = int(rng.integers(0, 10))
        x = right
        if k:
            for shift in range(0, p.shape[1] // 2):
                region = row[dy:dy + p.shape[0], right - shift:right - shift + p.shape[1]]
                if ((region > 0.3) & (p[:region.shape[0], :region.shape[1]] > 0.3)).any():
                    x = right - shift - int(rng.integers(0, 3))
                    break
            else:
                x = right - p.shape[1] // 2
        region = row[dy:dy + p.shape[0], x:x + p.shape[1]]
        np.maximum(region, p[:region.shape[0], :region.shape[1]], out=region)
        right = x + p.shape[1]
        text += t
    return row[:, : right + 2], text


def make_suite(images: np.ndarray, labels: np.ndarray, n: int = 100, n_rows: int = 100, n_blank: int = 50,
               n_other: int = 100, n_phone: int = 0, seed: int = 0, n_forms: int | None = None) -> list[Sample]:
    """The realistic suite: `n` single digits per category of SINGLE_CATEGORIES (plus `n_phone`
    12 MP phone photos, style "photo12mp"), `n_rows` rows per ROW_CATEGORIES, blanks and non-digits,
    then `n_forms` (default `n`) single digits per FORM_CATEGORIES and rows per FORM_ROW_CATEGORIES.
    Deterministic for a seed; digits are drawn from `images` (MNIST test) without tuning on them.
    The form categories draw from their own random stream, so adding them left the others as they were."""
    rng = np.random.default_rng(seed)
    samples: list[Sample] = []

    def pick() -> tuple[np.ndarray, str]:
        i = int(rng.integers(len(images)))
        return images[i], str(int(labels[i]))

    for category in SINGLE_CATEGORIES:
        for _ in range(n):
            x, truth = pick()
            if category == "frame16_gray":
                data = frame_filling(x, rng)
            elif category == "frame16_1bit_thick":
                data = frame_filling(x, rng, bits=True, thick=True)
            elif category == "bit32":
                data = bitmap32(x, rng)
            elif category == "lowres":
                data = low_resolution(x, rng)
            elif category == "pen_mnist":
                size = int(rng.integers(150, 250))
                width = float(np.exp(rng.uniform(np.log(2), np.log(30))))  # hairline to marker
                data = pen_canvas(pen_trajectory(x, size, width), rng)
            elif category == "pen_drawn":
                d = int(rng.integers(10))
                truth = str(d)
                data = pen_canvas(drawn_digit(d, int(rng.integers(150, 250)), rng, rng.uniform(0.02, 0.16)), rng)
            elif category == "photo":
                ink = mnist_digit(x, int(rng.integers(80, 400)), rng)
                f = rng.uniform(1.5, 4.0)
                data, _ = render(ink, rng, canvas=(int(ink.shape[0] * f), int(ink.shape[1] * f * 1.3)),
                                 style="photo", noise=rng.uniform(0.01, 18 / 255), quality=int(rng.integers(60, 92)))
            else:  # mixed: the older corpus's styles (canvas, inverted, RGBA, paper, photo, scan; rotated)
                ink, truth = one_digit(images, labels, rng)
                data, _ = render(ink, rng)
            samples.append(Sample("single", data, truth, category))
    for _ in range(n_phone):
        x, truth = pick()
        samples.append(Sample("single", phone_photo(x, rng), truth, "photo12mp"))
    for category in ROW_CATEGORIES:
        for _ in range(n_rows):
            if category == "row":
                ink, truth = digit_row(images, labels, rng, int(rng.integers(2, 11)), touching=False)
            else:
                ink, truth = touching_row(images, labels, rng, 2 if category == "pair_touching" else
                                          int(rng.integers(3, 6)))
            style = str(rng.choice(["canvas", "canvas_inverted", "rgba", "paper", "scan", "photo"]))
            data, _ = render(ink, rng, canvas=(int(ink.shape[0] * rng.uniform(1.2, 2.5)),
                                               int(ink.shape[1] * rng.uniform(1.05, 1.3))), style=style)
            samples.append(Sample("row", data, truth, category))
    samples += blanks_and_others(rng, n_blank, n_other)
    forms = np.random.default_rng([seed, 21])
    for category in FORM_CATEGORIES + FORM_ROW_CATEGORIES:
        for _ in range(n if n_forms is None else n_forms):
            data, truth = form_sample(images, labels, category, forms)
            samples.append(Sample("row" if category in FORM_ROW_CATEGORIES else "single", data, truth, category))
    return samples
