"""Image files in folders: what `digitlab predict FOLDER` reads."""

from __future__ import annotations

import os
from pathlib import Path

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}


def image_files(root: str | os.PathLike) -> list[Path]:
    """Every image file under `root`, recursively, in a stable order."""
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
