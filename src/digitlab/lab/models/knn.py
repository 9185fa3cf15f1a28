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

import numbers
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.utils.validation import validate_data

from digitlab.data import holdout
from digitlab.reader.preprocess import deskew

from .base import ClassicalClassifier, as_images, load_npz, save_npz


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


def votes(neighbour_labels: np.ndarray, weights: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class sums of neighbour weights, normalised to probabilities, float32 [N, n_classes]."""
    proba = np.zeros((len(neighbour_labels), n_classes), np.float64)
    np.add.at(proba, (np.arange(len(proba))[:, None], neighbour_labels), weights)
    return (proba / proba.sum(1, keepdims=True)).astype(np.float32)


@dataclass
class KNNConfig:
    k: int = 5


class KNN(ClassicalClassifier):
    """Plain k-NN on the pixels scaled to [0, 1], majority vote (scikit-learn's KNeighborsClassifier(5)).

    Any number of features works; images come as [N, 28, 28] or [N, 784] uint8."""

    family = "knn"
    Config = KNNConfig
    holdout = False

    def __init__(self, k: int = 5) -> None:
        self.k = k

    def fit(self, X, y, x_val=None, y_val=None) -> KNN:
        """Memorises (X, y); a validation split, if given, is not used (k is a setting here)."""
        if not isinstance(self.k, numbers.Integral) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        X, y = self._validate(X, y)
        # uint8 images stay uint8 (a 60,000-image training set is 47 MB, not 376 MB in float64)
        self.fit_X_ = np.ascontiguousarray(X if X.dtype == np.uint8 else X.astype(np.float64))
        self.labels_ = y
        self.points_ = self.fit_X_.astype(np.float32) / np.float32(255.0)
        return self

    def predict_proba(self, X) -> np.ndarray:
        queries, _ = self._validate(X, reset=False)
        neighbours = np.concatenate([self._neighbours(queries[s:s + 1000]) for s in range(0, len(queries), 1000)])
        return votes(self.labels_[neighbours], np.ones(neighbours.shape), len(self.classes_))

    def _neighbours(self, queries: np.ndarray) -> np.ndarray:
        # float32 BLAS finds a short list of candidates; exact distances then rank them (integer for
        # uint8 images, float64 otherwise), so rounding never changes which neighbours win (ties go to
        # the lower training index).
        k = min(self.k, len(self.fit_X_))
        _, cand = nearest(queries.astype(np.float32) / np.float32(255.0), self.points_, k + 8)
        exact_type = np.int32 if self.fit_X_.dtype == np.uint8 and queries.dtype == np.uint8 else np.float64
        diff = self.fit_X_[cand].astype(exact_type) - queries[:, None, :].astype(exact_type)
        exact = np.einsum("nkp,nkp->nk", diff, diff)
        order = np.lexsort((cand, exact), axis=1)[:, :k]
        return np.take_along_axis(cand, order, 1)

    def save_weights(self, directory: Path) -> None:
        save_npz(directory / "weights.npz", images=self.fit_X_, labels=self.classes_[self.labels_])

    def load_weights(self, directory: Path) -> None:
        w = load_npz(directory, ("images", "labels"))
        self.fit(w["images"], w["labels"])


@dataclass
class KNNFastConfig:
    dims: int = 60  # principal components kept
    k_max: int = 10  # k is chosen in 1..k_max on the validation split (fit sets `k_`)
    seed: int = 0  # of the validation split held out when fit gets none (data.holdout)
    deskew: bool = True  # straighten each 28x28 digit first (False: features as given, any number of them)


class KNNFast(ClassicalClassifier):
    family = "knn-fast"
    Config = KNNFastConfig
    holdout = False  # picks k on its own split of the training set, then memorises that split too

    def __init__(self, dims: int = 60, k_max: int = 10, seed: int = 0, deskew: bool = True) -> None:
        self.dims = dims
        self.k_max = k_max
        self.seed = seed
        self.deskew = deskew

    def _flat(self, X: np.ndarray) -> np.ndarray:
        """Validated inputs as float [N, n_features] in [0, 1]: deskewed first when `deskew`."""
        if self.deskew:
            return deskew(as_images(X)).reshape(len(X), -1) / 255.0
        return X / 255.0

    def features(self, X: np.ndarray) -> np.ndarray:
        """Validated inputs projected onto the principal components."""
        return ((self._flat(X) - self.mean_) @ self.basis_).astype(np.float32)

    def fit(self, X, y, x_val=None, y_val=None) -> KNNFast:
        """Fits the projection on (X, y), picks k on (x_val, y_val) -- a seeded hold-out of X when none
        is given -- and then memorises both."""
        X, y = self._validate(X, y)
        if x_val is None or len(x_val) == 0:
            if len(X) < 2:
                raise ValueError(f"knn-fast needs 2 samples or more to pick k on a hold-out, got n_samples = {len(X)}")
            (X, y), (x_val, y_val) = holdout(X, y, self.seed)
            x_val = x_val if len(x_val) else X[:1]  # fewer than 10 samples: pick k on one of them
            y_val = y_val if len(y_val) else y[:1]
        else:
            x_val, y_val = validate_data(self, x_val.reshape(len(x_val), -1), reset=False), self._labels(y_val)
        flat = self._flat(X)
        self.mean_ = flat.mean(0).astype(np.float32)
        _, vectors = np.linalg.eigh(np.atleast_2d(np.cov(flat - self.mean_, rowvar=False)))
        self.basis_ = np.ascontiguousarray(vectors[:, ::-1][:, :self.dims], dtype=np.float32)
        self.points_ = ((flat - self.mean_) @ self.basis_).astype(np.float32)
        self.labels_ = np.asarray(y, dtype=np.int64)
        # Pick k on the validation split, then keep the validation images as training data too.
        dists, idx = nearest(self.features(x_val), self.points_, self.k_max)
        accuracy = [float((self._vote(dists[:, :k], idx[:, :k]).argmax(1) == y_val).mean())
                    for k in range(1, idx.shape[1] + 1)]
        self.k_ = int(np.argmax(accuracy)) + 1
        self.points_ = np.concatenate([self.points_, self.features(x_val)])
        self.labels_ = np.concatenate([self.labels_, np.asarray(y_val, dtype=np.int64)])
        keep = self.labels_ >= 0  # validation labels never seen in X cannot be voted for
        self.points_, self.labels_ = self.points_[keep], self.labels_[keep]
        return self

    def _vote(self, dists: np.ndarray, idx: np.ndarray) -> np.ndarray:
        return votes(self.labels_[idx], 1.0 / (np.sqrt(dists) + 1e-6), len(self.classes_))

    def predict_proba(self, X) -> np.ndarray:
        X, _ = self._validate(X, reset=False)
        dists, idx = nearest(self.features(X), self.points_, self.k_)
        return self._vote(dists, idx)

    def n_parameters(self) -> int:
        return self.basis_.size + self.mean_.size

    def save_weights(self, directory: Path) -> None:
        save_npz(directory / "weights.npz", mean=self.mean_, basis=self.basis_, points=self.points_,
                 labels=self.labels_, k=np.array(self.k_), classes=self.classes_)

    def load_weights(self, directory: Path) -> None:
        w = load_npz(directory, ("mean", "basis", "points", "labels", "k"), optional=("classes",))
        self.mean_, self.basis_, self.points_, self.labels_ = w["mean"], w["basis"], w["points"], w["labels"]
        self.k_ = int(w["k"])
        self.classes_ = w.get("classes", np.arange(10))  # written since 0.2.0; digits before
        self.n_features_in_ = len(self.mean_)
