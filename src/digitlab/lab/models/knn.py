"""k-nearest neighbours: `knn` (the reference: k=5, Euclidean on pixels in [0, 1]) and `knn-fast`.

`knn-fast` deskews each digit (shear so that its main axis stands upright, centred on its centre of
mass), projects it onto the top principal components of the training set, and lets the k nearest
neighbours vote weighted by 1/distance, with k picked on the validation split. Fewer dimensions
make it both faster and more accurate than the plain pixel distance.

Distances use the BLAS identity ||a - b||^2 = ||a||^2 - 2 a.b + ||b||^2, a block of queries at a
time, and `smallest` to find the k smallest without sorting (or even partitioning) 60,000 columns.
Weights are an npz file (the stored training set, plus the PCA basis and the chosen k for
`knn-fast`); no pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from digitlab.data import holdout
from digitlab.reader.preprocess import deskew

from .base import Classifier, load_npz, save_npz


def nearest(queries: np.ndarray, points: np.ndarray, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Squared distances and indices of the k nearest `points` to each query, nearest first (ties: lower index)."""
    k = min(k, len(points))
    points_sq = np.einsum("ij,ij->i", points, points)
    dists, idx = np.empty((len(queries), k), np.float32), np.empty((len(queries), k), np.int64)
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        d = (-2 * q) @ points.T
        d += points_sq  # + ||q||^2 is the same for the whole row: added to the k winners only
        cols = smallest(d, k)
        dk = np.take_along_axis(d, cols, 1) + np.einsum("ij,ij->i", q, q)[:, None]
        dists[start:start + chunk], idx[start:start + chunk] = np.maximum(dk, 0), cols
    return dists, idx


def smallest(d: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k smallest values of each row, in increasing order (ties: lower index).

    `argpartition` over 60,000 columns is the slow part of k-NN, so split each row into blocks and
    take each block's minimum: the k-th smallest block minimum bounds the k-th smallest value from
    above, so only the few blocks whose minimum is under that bound need a closer look.
    """
    n, m = d.shape
    k = min(k, m)
    block = next((b for b in range(256, 31, -1) if m % b == 0 and m // b >= 4 * k), 1)
    blocks = d.reshape(n, m // block, block)
    minima = blocks.min(2) if block > 1 else d
    bound = np.partition(minima, k - 1, axis=1)[:, k - 1]
    rows, found = np.nonzero(minima <= bound[:, None])
    values = blocks[rows, found]  # [candidate blocks, block]
    cols = found[:, None] * block + np.arange(block)
    rows = np.broadcast_to(rows[:, None], values.shape)
    keep = values <= bound[rows]
    rows, cols, values = rows[keep], cols[keep], values[keep]
    order = np.lexsort((cols, values, rows))  # by row, then value, then index
    rows, cols = rows[order], cols[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position within its row
    return cols[rank < k].reshape(n, k)


def votes(neighbour_labels: np.ndarray, weights: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """Per-class sums of neighbour weights, normalised to probabilities, float32 [N, n_classes]."""
    proba = np.zeros((len(neighbour_labels), n_classes), np.float64)
    np.add.at(proba, (np.arange(len(proba))[:, None], neighbour_labels), weights)
    return (proba / proba.sum(1, keepdims=True)).astype(np.float32)


@dataclass
class KNNConfig:
    k: int = 5


class KNN(Classifier):
    """Plain k-NN on the 784 pixels scaled to [0, 1], majority vote (scikit-learn's KNeighborsClassifier(5))."""

    family = "knn"
    Config = KNNConfig
    holdout = False

    def fit(self, x, y, x_val=None, y_val=None) -> KNN:
        self.images_ = np.ascontiguousarray(x, dtype=np.uint8).reshape(len(x), -1)
        self.labels_ = np.asarray(y, dtype=np.int64)
        self.points_ = self.images_.astype(np.float32) / 255.0
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        queries = np.asarray(x).reshape(len(x), -1)
        neighbours = np.concatenate([self._neighbours(queries[s:s + 1000]) for s in range(0, len(queries), 1000)])
        return votes(self.labels_[neighbours], np.ones(neighbours.shape))

    def _neighbours(self, queries: np.ndarray) -> np.ndarray:
        # float32 BLAS finds a short list of candidates; exact integer distances then rank them, so
        # rounding never changes which neighbours win (ties go to the lower training index).
        _, cand = nearest(queries.astype(np.float32) / 255.0, self.points_, self.config.k + 8)
        diff = self.images_[cand].astype(np.int32) - queries[:, None, :].astype(np.int32)
        exact = np.einsum("nkp,nkp->nk", diff, diff)
        order = np.lexsort((cand, exact), axis=1)[:, :self.config.k]
        return np.take_along_axis(cand, order, 1)

    def save_weights(self, directory: Path) -> None:
        save_npz(directory / "weights.npz", images=self.images_, labels=self.labels_)

    def load_weights(self, directory: Path) -> None:
        w = load_npz(directory, ("images", "labels"))
        self.fit(w["images"], w["labels"])


@dataclass
class KNNFastConfig:
    dims: int = 60  # principal components kept
    k_max: int = 10  # k is chosen in 1..k_max on the validation split (fit sets `k_`)
    seed: int = 0  # of the validation split held out when fit gets none (data.holdout)


class KNNFast(Classifier):
    family = "knn-fast"
    Config = KNNFastConfig
    holdout = False  # picks k on its own split of the training set, then memorises that split too

    def features(self, x: np.ndarray) -> np.ndarray:
        flat = deskew(np.asarray(x)).reshape(len(x), -1) / 255.0
        return ((flat - self.mean_) @ self.basis_).astype(np.float32)

    def fit(self, x, y, x_val=None, y_val=None) -> KNNFast:
        if x_val is None or len(x_val) == 0:
            (x, y), (x_val, y_val) = holdout(x, y, self.config.seed)
        flat = deskew(np.asarray(x)).reshape(len(x), -1) / 255.0
        self.mean_ = flat.mean(0).astype(np.float32)
        _, vectors = np.linalg.eigh(np.cov(flat - self.mean_, rowvar=False))
        self.basis_ = np.ascontiguousarray(vectors[:, ::-1][:, :self.config.dims], dtype=np.float32)
        self.points_ = ((flat - self.mean_) @ self.basis_).astype(np.float32)
        self.labels_ = np.asarray(y, dtype=np.int64)
        # Pick k on the validation split, then keep the validation images as training data too.
        dists, idx = nearest(self.features(x_val), self.points_, self.config.k_max)
        accuracy = [float((self._vote(dists[:, :k], idx[:, :k]).argmax(1) == y_val).mean())
                    for k in range(1, self.config.k_max + 1)]
        self.k_ = int(np.argmax(accuracy)) + 1
        self.points_ = np.concatenate([self.points_, self.features(x_val)])
        self.labels_ = np.concatenate([self.labels_, np.asarray(y_val, dtype=np.int64)])
        return self

    def _vote(self, dists: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return votes(self.labels_[idx], 1.0 / (np.sqrt(dists) + 1e-6))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        dists, idx = nearest(self.features(x), self.points_, self.k_)
        return self._vote(dists, idx)

    def n_parameters(self) -> int:
        return self.basis_.size + self.mean_.size

    def save_weights(self, directory: Path) -> None:
        save_npz(directory / "weights.npz", mean=self.mean_, basis=self.basis_, points=self.points_,
                  labels=self.labels_, k=np.array(self.k_))

    def load_weights(self, directory: Path) -> None:
        w = load_npz(directory, ("mean", "basis", "points", "labels", "k"))
        self.mean_, self.basis_, self.points_, self.labels_ = w["mean"], w["basis"], w["points"], w["labels"]
        self.k_ = int(w["k"])
