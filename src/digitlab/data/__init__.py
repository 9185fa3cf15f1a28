"""Datasets in MNIST format: `load("mnist", split="train")` -> (images uint8 [N,28,28], labels int64 [N])."""

from __future__ import annotations

import os

import numpy as np

from .folder import image_files
from .idx import read_idx, write_idx
from .registry import DATASETS, Dataset, get, load_split, locate

__all__ = ["DATASETS", "VAL_SIZE", "Dataset", "get", "holdout", "image_files", "load", "locate",
           "normalization", "read_idx", "train_val_split", "write_idx"]

VAL_SIZE = 5000  # images held out of a training split for validation (a tenth of a smaller one)


def load(name: str = "mnist", split: str = "train", data_dir: str | os.PathLike | None = None,
         download: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of a registered dataset, verified against its checksums. Missing files are
    downloaded unless `download=False` or the environment sets DIGITLAB_OFFLINE=1."""
    return load_split(name, split, data_dir, download)


def train_val_split(images: np.ndarray, labels: np.ndarray, val_size: int | float = 5000,
                    seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A seeded random hold-out: ((train_x, train_y), (val_x, val_y))."""
    n = len(images)
    n_val = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if not 0 <= n_val < n:
        raise ValueError(f"val_size {val_size} leaves no training data out of {n}")
    order = np.random.default_rng(seed).permutation(n)
    val, train = order[:n_val], order[n_val:]
    return (images[train], labels[train]), (images[val], labels[val])


def holdout(images: np.ndarray, labels: np.ndarray, seed: int = 0):
    """The seeded validation split every model uses: VAL_SIZE images, or a tenth of a smaller
    (--limit) training set. Returns ((train_x, train_y), (val_x, val_y))."""
    return train_val_split(images, labels, min(VAL_SIZE, len(images) // 10), seed=seed)


def normalization(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of pixel values scaled to [0, 1] (MNIST train: 0.1307, 0.3081)."""
    x = images.astype(np.float64) / 255.0
    return float(x.mean()), float(x.std())
