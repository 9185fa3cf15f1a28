"""Users' own labelled images in the usual layout: `root/0/*.png`, `root/1/*.jpg`, ..."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from digitlab.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file under `root`, recursively, in a stable order."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def load_folder(root: str | os.PathLike, to_mnist=None) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 [N, 28, 28] and labels int64 [N] from class folders `0/` ... `9/`.

    `to_mnist` turns one image file into a 28x28 uint8 array; by default the reader's
    MNIST-faithful preprocessing is used.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    if to_mnist is None:
        from digitlab.reader.preprocess import to_mnist
    images, labels = [], []
    for label in range(10):
        for path in image_files(root / str(label)):
            images.append(to_mnist(path))
            labels.append(label)
    if not images:
        raise DataError(f"{root}: no images found in class folders 0/ .. 9/")
    return np.stack(images).astype(np.uint8), np.array(labels, dtype=np.int64)
