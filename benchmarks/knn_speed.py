"""k-NN on the full MNIST test set: scikit-learn's KNeighborsClassifier(5) vs digitlab's knn and knn-fast.

All three predict the same 10,000 test images in one run; the speed ratio is sklearn's predict
time over knn-fast's. Run under the CPU lock:  flock /tmp/digitlab-cpu.lock python benchmarks/knn_speed.py
"""

from __future__ import annotations

import time

import numpy as np

from _cpu import print_cpu
from digitlab.data import load, train_val_split
from digitlab.lab import models


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    print_cpu()
    from sklearn.neighbors import KNeighborsClassifier

    x, y = load("mnist", "train")
    xt, yt = load("mnist", "test")
    flat, flat_test = x.reshape(len(x), -1).astype(np.float32) / 255, xt.reshape(len(xt), -1).astype(np.float32) / 255

    sk = KNeighborsClassifier(n_neighbors=5).fit(flat, y)
    sk_pred, sk_time = timed(lambda: sk.predict(flat_test))

    knn = models.create("knn").fit(x, y)
    knn_pred, knn_time = timed(lambda: knn.predict(xt))

    (xa, ya), (xv, yv) = train_val_split(x, y, 5000, seed=0)
    fast, fit_time = timed(lambda: models.create("knn-fast").fit(xa, ya, xv, yv))
    fast_pred, fast_time = timed(lambda: fast.predict(xt))

    print(f"{'model':<40} {'test accuracy':>13} {'predict 10k (s)':>16} {'images/s':>9}")
    fast_name = f"digitlab knn-fast (k={fast.k_}, {fast.config.dims} dims)"
    for name, pred, seconds in (("sklearn KNeighborsClassifier(5)", sk_pred, sk_time),
                                ("digitlab knn (k=5, exact)", knn_pred, knn_time),
                                (fast_name, fast_pred, fast_time)):
        print(f"{name:<40} {100 * (pred == yt).mean():>12.2f}% {seconds:>16.2f} {len(xt) / seconds:>9,.0f}")
    print(f"knn predictions identical to sklearn's: {bool((knn_pred == sk_pred).all())} "
          f"({int((knn_pred != sk_pred).sum())} differ)")
    print(f"knn-fast fit (deskew, PCA, choose k): {fit_time:.2f}s")
    print(f"speed-up knn-fast vs sklearn: {sk_time / fast_time:.1f}x; knn vs sklearn: {sk_time / knn_time:.1f}x")


if __name__ == "__main__":
    main()
