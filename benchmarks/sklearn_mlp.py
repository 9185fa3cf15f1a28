"""scikit-learn MLPs on full MNIST: the study's exact call (`mlp-sklearn`) and `mlp-sklearn-tuned`.

`mlp-sklearn` is fitted on all 60,000 training images as the study did (reference: 89.8% train,
89.06% test); `mlp-sklearn-tuned` on 55,000 with the 5,000-image validation split for early stopping.
Run under the CPU lock:  flock /tmp/digitlab-cpu.lock python benchmarks/sklearn_mlp.py
"""

from __future__ import annotations

import time
import warnings

from _cpu import print_cpu
from digitlab.data import load, train_val_split
from digitlab.lab import models


def main() -> None:
    print_cpu()
    import argparse

    import sklearn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["exact", "tuned"], help="run one of the two (default: both)")
    only = parser.parse_args().only

    x, y = load("mnist", "train")
    xt, yt = load("mnist", "test")
    print(f"scikit-learn {sklearn.__version__}")

    if only != "tuned":
        exact_mlp(x, y, xt, yt)
    if only != "exact":
        tuned_mlp(x, y, xt, yt)


def exact_mlp(x, y, xt, yt) -> None:
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exact = models.create("mlp-sklearn").fit(x, y)
    seconds = time.perf_counter() - start
    converged = not any("converged" in str(w.message) for w in caught)
    print(f"mlp-sklearn (exact): train {100 * exact.score(x, y):.2f}%  test {100 * exact.score(xt, yt):.2f}%  "
          f"{len(exact.history)} epochs ({'converged' if converged else 'max_iter reached'}), "
          f"final training loss {exact.history[-1]['train_loss']:.4f}, {seconds:.1f}s", flush=True)


def tuned_mlp(x, y, xt, yt) -> None:
    (xa, ya), (xv, yv) = train_val_split(x, y, 5000, seed=0)
    start = time.perf_counter()
    tuned = models.create("mlp-sklearn-tuned").fit(xa, ya, xv, yv)
    seconds = time.perf_counter() - start
    best = max(tuned.history, key=lambda h: h["val_acc"])  # the epoch it keeps
    print(f"mlp-sklearn-tuned: train {100 * tuned.score(xa, ya):.2f}%  val {100 * best['val_acc']:.2f}%  "
          f"test {100 * tuned.score(xt, yt):.2f}%  best epoch {best['epoch']} of {len(tuned.history)}, {seconds:.1f}s")


if __name__ == "__main__":
    main()
