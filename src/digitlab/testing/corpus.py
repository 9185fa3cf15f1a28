"""A realistic, deterministic corpus of "people's images" for testing and benchmarking the reader.

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

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from scipy import ndimage


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
    width = width if width is not None else rng.uniform(0.05, 0.16)
    slant, squeeze = rng.uniform(-0.2, 0.2), rng.uniform(0.75, 1.1)
    scale = 2  # draw at twice the size, then reduce: anti-aliased edges
    canvas = Image.new("L", (size * scale, size * scale), 0)
    draw = ImageDraw.Draw(canvas)
    margin = 0.08
    strokes = TEMPLATES[digit]
    if digit == 1 and rng.random() < 0.5:  # the flag many people write
        strokes = [[(0.38, 0.2)] + strokes[0]]
    for stroke in strokes:
        pts = np.array(stroke) + rng.normal(0, 0.012, (len(stroke), 2))
        x = 0.5 + (pts[:, 0] - 0.5) * squeeze + slant * (0.5 - pts[:, 1])
        y = pts[:, 1]
        xy = [((margin + (1 - 2 * margin) * a) * size * scale, (margin + (1 - 2 * margin) * b) * size * scale)
              for a, b in zip(x, y, strict=True)]
        pen = max(1, round(width * size * scale))
        draw.line(xy, fill=255, width=pen, joint="curve")
        for px, py in (xy[0], xy[-1]):  # round caps
            draw.ellipse((px - pen / 2, py - pen / 2, px + pen / 2, py + pen / 2), fill=255)
    return np.asarray(canvas.resize((size, size), Image.BOX), np.float32) / 255


def mnist_digit(image28: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """An MNIST digit upsampled smoothly to size x size, sometimes made thicker or thinner."""
    big = np.asarray(Image.fromarray(image28).resize((size, size), Image.BICUBIC), np.float32) / 255
    big = np.clip((big - 0.25) * 1.6, 0, 1)  # crisper edges, like a pen rather than a blur
    style = rng.integers(3)
    k = max(1, size // 28)
    if style == 1:
        big = ndimage.grey_dilation(big, size=(k + 1, k + 1))
    elif style == 2 and size >= 56:
        big = ndimage.grey_erosion(big, size=(k // 2 + 1, k // 2 + 1))
    return big


def rotate(ink: np.ndarray, degrees: float) -> np.ndarray:
    return np.asarray(Image.fromarray(ink, "F").rotate(degrees, Image.BILINEAR, expand=True), np.float32)


# ---------------------------------------------------------------------------- canvases
def _color(rng, light: bool) -> np.ndarray:
    if light:
        return rng.uniform(0.75, 1.0, 3) * rng.uniform(0.85, 1.0)
    return rng.uniform(0.0, 0.3, 3)


def render(ink: np.ndarray, rng: np.random.Generator, canvas: tuple[int, int] | None = None,
           style: str | None = None) -> tuple[object, str]:
    """Put an ink map (float 0-1, 1 = ink) on a canvas in one of the styles people's images come in.
    Returns (data a user would pass, style name)."""
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
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (H, W)), rng.uniform(1, 3)).astype(np.float32)
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
            img = ndimage.gaussian_filter(img, (rng.uniform(0.3, 1.2), rng.uniform(0.3, 1.2), 0))
        img = img + rng.normal(0, rng.uniform(0.005, 0.03), img.shape)
    image = _to_image(img, gray=style == "scan")
    if style == "paper":
        return _encode(image, "PNG", compress_level=1), style
    return _encode(image, "JPEG", quality=int(rng.integers(35, 90))), style


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


def digit_row(images, labels, rng, n: int, touching: bool) -> tuple[np.ndarray, str]:
    """n digits side by side with varied spacing (overlapping a little when `touching`)."""
    height = int(rng.integers(40, 110))
    pieces, text = [], ""
    for _ in range(n):
        if rng.random() < 0.6:
            i = int(rng.integers(len(images)))
            ink, t = mnist_digit(images[i], height, rng), str(int(labels[i]))
        else:
            d = int(rng.integers(10))
            ink, t = drawn_digit(d, height, rng, width=rng.uniform(0.06, 0.12)), str(d)
        cols = np.flatnonzero(ink.max(axis=0) > 0.1)
        pieces.append(ink[:, cols[0]:cols[-1] + 1] if cols.size else ink)
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


LETTERS = "ACEFHKLMNPRUVWXYaefhkmnprtuvwxy"  # none that a person would also write as a digit


def not_a_digit(rng) -> tuple[np.ndarray, str]:
    """Ink that is not a digit: random noise, a scribble or a letter."""
    kind = str(rng.choice(["noise", "scribble", "letter"]))
    size = int(rng.integers(60, 300))
    if kind == "noise":
        return (rng.random((size, size)) < rng.uniform(0.05, 0.4)).astype(np.float32), kind
    if kind == "scribble":
        canvas = Image.new("L", (size, size), 0)
        pts = [tuple(p) for p in rng.uniform(0.1, 0.9, (int(rng.integers(5, 14)), 2)) * size]
        ImageDraw.Draw(canvas).line(pts, fill=255, width=max(2, size // 15), joint="curve")
        return np.asarray(canvas, np.float32) / 255, kind
    font = ImageFont.load_default(size=size * 0.8)
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).text((size * 0.1, 0), str(rng.choice(list(LETTERS))), fill=255, font=font)
    canvas = canvas.filter(ImageFilter.MaxFilter(max(1, size // 40) * 2 + 1))  # a pen, not a thin font
    return np.asarray(canvas, np.float32) / 255, kind


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
    for _ in range(n_blank):
        samples.append(Sample("blank", blank(rng), "", "blank"))
    for _ in range(n_other):
        ink, kind = not_a_digit(rng)
        data, style = render(ink, rng)
        samples.append(Sample("other", data, "", kind))
    return samples
