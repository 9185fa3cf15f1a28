"""The example images the documentation uses, made from MNIST test digits: `digitlab data examples DIR`.

    seven.png         test digit 0 (a 7), padded 4 px, dark ink on white paper at 4x (PNG)
    number.png        test digits 1-5 (2, 1, 0, 4, 1) side by side, the same way: the number 21041
    number.jpg        the same picture as a JPEG (quality 95), as a phone or scanner saves it
    blank-canvas.png  a transparent 280x280 PNG: what an empty drawing pad exports
    notes.txt         a text file: what `predict` says about a file that is no image

Every file is made the same way each time (no randomness), so the outputs shown in the docs repeat.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from digitlab.files import atomic_write_bytes

SCALE = 4  # the pictures are 4x MNIST's size: 144 px tall, as a digit written on paper and photographed


def paper(digits: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """MNIST digits side by side, each padded 4 px, upscaled, dark ink on white paper (uint8 gray)."""
    row = np.concatenate([np.pad(d, 4) for d in digits], axis=1)
    big = Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.BICUBIC)
    return 255 - np.asarray(big)


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def write_examples(out: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Writes the example files into `out` (created if missing); returns their paths."""
    from digitlab.data import load

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, _ = load("mnist", "test", data_dir)
    number = Image.fromarray(paper(images[1:6]))
    files = {
        "seven.png": _encoded(Image.fromarray(paper(images[:1])), "PNG"),
        "number.png": _encoded(number, "PNG"),
        "number.jpg": _encoded(number, "JPEG", quality=95),
        "blank-canvas.png": _encoded(Image.new("RGBA", (280, 280), (0, 0, 0, 0)), "PNG"),
        "notes.txt": b"shopping: milk, 2 loaves, 7 apples\n",
    }
    return [atomic_write_bytes(out / name, data) for name, data in files.items()]
