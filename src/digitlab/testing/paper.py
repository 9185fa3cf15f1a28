"""Handwriting where people write it: digits in printed boxes, rows of boxes, on ruled and squared
paper, on a printed line, and numbers photographed under uneven light. Procedural, from a seed.

The same drawing serves two purposes, so that what the model trains on and what the suite measures
are made alike but never from the same digits:
- the realistic suite (`corpus.make_suite`) puts MNIST *test* digits on such paper, to measure;
- training (`lab.augment`) puts MNIST *training* digits on it, to learn that printed lines are not ink.

Printed structure varies the way forms and notebooks do: grey, blue, red or black lines, 1-5% of a
digit's height thick, solid, dashed or dotted, a box 1.05-1.9 times the digit, closed or open at the
top, the digit crossing or touching the lines, a slight rotation, then paper, light, blur, noise, JPEG.

    ink, truth = ...                                    # float [h, w] ink 0-1, e.g. corpus.mnist_digit
    page, truth = on_paper([ink], [truth], "box", rng)  # float RGB [H, W, 3], paper light, ink dark
    data = photograph(page, rng)                        # encoded bytes, as a user would pass them
"""

from __future__ import annotations

import io

import cv2
import numpy as np
from PIL import Image

KINDS = ("box", "comb", "ruled", "squared", "underline", "photo_number")

LINE_COLOURS = {  # RGB of printed lines: grey, blue, red, black (light and dark variants)
    "grey": ((0.45, 0.45, 0.45), (0.75, 0.75, 0.75)),
    "blue": ((0.25, 0.4, 0.8), (0.55, 0.7, 0.95)),
    "red": ((0.8, 0.2, 0.2), (0.95, 0.55, 0.55)),
    "black": ((0.05, 0.05, 0.05), (0.3, 0.3, 0.3)),
}


def line_colour(rng: np.random.Generator) -> np.ndarray:
    dark, light = (np.array(c) for c in LINE_COLOURS[str(rng.choice(list(LINE_COLOURS)))])
    return dark + rng.uniform(0, 1) * (light - dark)


def draw_line(mask: np.ndarray, p0: tuple[float, float], p1: tuple[float, float], thickness: int,
              style: str, rng: np.random.Generator) -> None:
    """A printed line from p0 to p1 (x, y) onto a float mask, solid, dashed or dotted."""
    (x0, y0), (x1, y1) = p0, p1
    length = float(np.hypot(x1 - x0, y1 - y0))
    if style == "solid" or length < 1:
        cv2.line(mask, (round(x0), round(y0)), (round(x1), round(y1)), 1.0, thickness, cv2.LINE_AA)
        return
    period = max(3.0, thickness * (rng.uniform(2.5, 4) if style == "dotted" else rng.uniform(5, 9)))
    on = max(1.0, thickness) if style == "dotted" else period * rng.uniform(0.5, 0.75)
    for s in np.arange(0, length, period):
        a, b = s / length, min(s + on, length) / length
        if style == "dotted":
            cv2.circle(mask, (round(x0 + a * (x1 - x0)), round(y0 + a * (y1 - y0))), max(1, thickness // 2 + 1),
                       1.0, -1, cv2.LINE_AA)
        else:
            cv2.line(mask, (round(x0 + a * (x1 - x0)), round(y0 + a * (y1 - y0))),
                     (round(x0 + b * (x1 - x0)), round(y0 + b * (y1 - y0))), 1.0, thickness, cv2.LINE_AA)


def paste(canvas: np.ndarray, ink: np.ndarray, left: int, top: int) -> None:
    """Ink onto a canvas at (left, top), clipped to the canvas, keeping the darker stroke where they meet."""
    h, w = ink.shape
    t0, l0 = max(0, top), max(0, left)
    t1, l1 = min(canvas.shape[0], top + h), min(canvas.shape[1], left + w)
    if t1 > t0 and l1 > l0:
        region = canvas[t0:t1, l0:l1]
        np.maximum(region, ink[t0 - top:t1 - top, l0 - left:l1 - left], out=region)


def crop_ink(ink: np.ndarray, level: float = 0.1) -> np.ndarray:
    rows, cols = np.flatnonzero(ink.max(1) > level), np.flatnonzero(ink.max(0) > level)
    if not rows.size:
        return ink
    return ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def layout(inks: list[np.ndarray], kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(handwriting, printed structure): two float masks of one page, for digits `inks` (each cut to
    its ink, all about one height) written on paper of this kind."""
    inks = [crop_ink(i) for i in inks]
    h = max(i.shape[0] for i in inks)
    thickness = max(1, round(h * rng.uniform(0.01, 0.05)))
    style = str(rng.choice(["solid", "solid", "solid", "dashed", "dotted"])) if kind in ("underline", "ruled") \
        else "solid"
    margin = int(h * rng.uniform(0.15, 0.6))
    if kind in ("box", "comb"):
        cell_w, cell_h = int(h * rng.uniform(1.05, 1.6)), int(h * rng.uniform(1.1, 1.6))
        if kind == "box":
            cell_w = max(cell_w, max(i.shape[1] for i in inks) + 4)
        H, W = cell_h + 2 * margin, cell_w * len(inks) + 2 * margin
        writing, lines = np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
        open_top = rng.random() < 0.25
        top, bottom = margin, margin + cell_h
        for k in range(len(inks) + 1):
            x = margin + k * cell_w
            draw_line(lines, (x, top + (cell_h * rng.uniform(0.5, 0.75) if open_top else 0)), (x, bottom),
                      thickness, style, rng)
        if not open_top:
            draw_line(lines, (margin, top), (W - margin, top), thickness, style, rng)
        draw_line(lines, (margin, bottom), (W - margin, bottom), thickness, style, rng)
        for k, ink in enumerate(inks):  # inside its cell, sometimes over the frame a little
            ih, iw = ink.shape
            spill = 0.06 * h
            left = margin + k * cell_w + int(rng.uniform(-spill, max(-spill + 1, cell_w - iw + spill)))
            top_ink = margin + int(rng.uniform(-spill, max(-spill + 1, cell_h - ih + spill)))
            paste(writing, ink, left, top_ink)
        return writing, lines
    # one line of writing: the digits side by side, then the paper's lines around them
    gaps = [int(h * rng.uniform(0.15, 0.5)) for _ in inks[1:]]
    row_w = sum(i.shape[1] for i in inks) + sum(gaps)
    H, W = h + 2 * margin, row_w + 2 * margin + int(h * rng.uniform(0, 1.0))
    writing, lines = np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)
    x = margin
    for k, ink in enumerate(inks):
        paste(writing, ink, x, margin + (h - ink.shape[0]) // 2 + int(rng.integers(-2, 3)))
        x += ink.shape[1] + (gaps[k] if k < len(gaps) else 0)
    if kind == "underline":
        y = margin + h + int(h * rng.uniform(-0.08, 0.12))  # touching or just under the digits
        x0, x1 = margin - int(h * rng.uniform(0.1, 0.6)), x + int(h * rng.uniform(0.1, 0.6))
        draw_line(lines, (x0, y), (x1, y), thickness, style, rng)
    elif kind in ("ruled", "squared"):
        spacing = h * (rng.uniform(0.5, 1.1) if kind == "ruled" else rng.uniform(0.35, 0.8))
        for y in np.arange(rng.uniform(0, spacing), H, spacing):
            draw_line(lines, (0, y), (W, y), thickness, style, rng)
        if kind == "squared":
            for x in np.arange(rng.uniform(0, spacing), W, spacing):
                draw_line(lines, (x, 0), (x, H), thickness, style, rng)
        elif rng.random() < 0.2:  # a notebook's margin line
            mx = rng.uniform(0.05, 0.2) * W
            draw_line(lines, (mx, 0), (mx, H), thickness, "solid", rng)
    return writing, lines


def on_paper(inks: list[np.ndarray], kind: str, rng: np.random.Generator) -> np.ndarray:
    """Digits (float ink 0-1 each) handwritten on paper of this kind: float RGB [H, W, 3], 0-1, with the
    printed lines in their own colour, the pen's colour over them, slightly rotated."""
    writing, lines = layout(inks, kind, rng)  # photo_number: plain paper, no lines
    paper = rng.uniform(0.85, 1.0, 3) * rng.uniform(0.92, 1.0)
    pen = rng.uniform(0.0, 0.3, 3) * np.array([1, 1, 1]) + np.array([0, 0, rng.uniform(0, 0.35)])
    img = paper * (1 - lines[..., None]) + line_colour(rng) * lines[..., None]
    img = img * (1 - writing[..., None]) + pen * writing[..., None]
    angle = rng.uniform(-2, 2)
    if abs(angle) > 0.3:
        h, w = writing.shape
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
        img = cv2.warpAffine(img.astype(np.float32), matrix, (w, h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
    return np.clip(img, 0, 1).astype(np.float32)


def photograph(page: np.ndarray, rng: np.random.Generator, strong_light: bool = False) -> bytes:
    """A page as a user's file: a flat scan (PNG) or a photo (JPEG) with light falling off across it,
    maybe a shadow, blur and noise. strong_light: always a photo, light falling off by 35-65%."""
    H, W = page.shape[:2]
    style = "photo" if strong_light else str(rng.choice(["scan", "photo", "photo"]))
    img = page
    if style == "photo":
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32) / max(H, W)
        angle = rng.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * xx + np.sin(angle) * yy
        fall = rng.uniform(0.35, 0.65) if strong_light else rng.uniform(0.05, 0.35)
        light = 1 - fall * (ramp - ramp.min()) / (np.ptp(ramp) + 1e-6)
        if rng.random() < 0.4:  # a soft shadow across part of the sheet
            across = xx * np.cos(angle + 1) + yy * np.sin(angle + 1) - rng.uniform(0.2, 0.8)
            light = light * (1 - rng.uniform(0.1, 0.3) / (1 + np.exp(-across * 25)))
        img = cv2.GaussianBlur(img * light[..., None], (0, 0), rng.uniform(0.3, 1.0))
        img = img + rng.normal(0, rng.uniform(0.005, 0.03), img.shape).astype(np.float32)
    u8 = (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)
    image = Image.fromarray(u8, "RGB")
    buf = io.BytesIO()
    if style == "scan":
        image.convert("L").save(buf, "PNG", compress_level=1)
    else:
        image.save(buf, "JPEG", quality=int(rng.integers(60, 92)))
    return buf.getvalue()
