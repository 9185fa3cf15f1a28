"""Trains one of digitlab's own models (fast | best) on the full MNIST training set, saves it and
writes its test-set figures to metrics.json. The bundled model is rebuilt with:

    python scripts/train_own.py best --seed 0 --threads 2 --out runs/best
    digitlab export runs/best --bundle

`ensemble --members DIR...` combines models trained this way (averaged probabilities):

    python scripts/train_own.py ensemble --members runs/best runs/best-s1 runs/best-s2 --out runs/ensemble
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import numpy as np

from digitlab.data import load
from digitlab.files import atomic_write_json, read_json
from digitlab.lab.models import create
from digitlab.lab.train import Callback


class Progress(Callback):
    """One line every 100 batches: where training is and how long it has run."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def on_batch_end(self, state) -> None:
        if state.batch % 100 == 0 or state.batch == state.n_batches:
            print(f"epoch {state.epoch + 1} batch {state.batch}/{state.n_batches} "
                  f"{time.perf_counter() - self.t0:.0f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family", choices=["fast", "best", "ensemble"])
    parser.add_argument("--members", nargs="+", help="ensemble: trained model directories to combine")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="override the family's default")
    parser.add_argument("--widths", help="channels of the three stages, e.g. 24,48,96 (the bundled model's)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (1 is faster on a busy machine)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    overrides = {"seed": args.seed, "threads": args.threads, **({"epochs": args.epochs} if args.epochs else {})}
    if args.widths:
        overrides["widths"] = tuple(int(w) for w in args.widths.split(","))
    (x, y), (x_test, y_test) = load("mnist", "train"), load("mnist", "test")
    if args.family == "ensemble":
        from digitlab.lab.models import load as load_model
        from digitlab.lab.models.ensemble import Ensemble

        if not args.members:
            parser.error("ensemble needs --members DIR [DIR ...]")
        model = Ensemble.of([load_model(d) for d in args.members])
        train_time = wall = sum(read_json(f"{d}/metrics.json")["train_time_s"] for d in args.members)
        for directory, member in zip(args.members, model.members, strict=True):
            print(f"member {directory}: test accuracy {member.score(x_test, y_test):.4f}")
    else:
        model = create(args.family, **overrides)
        model.callbacks.append(Progress())
        t0 = time.perf_counter()
        model.fit(x, y)
        wall, train_time = time.perf_counter() - t0, model.train_time
    model.save(args.out)
    predicted = model.predict(x_test)
    per_class = {str(c): float((predicted[y_test == c] == c).mean()) for c in range(10)}
    metrics = {"test_accuracy": float((predicted == y_test).mean()), "train_time_s": train_time,
               "fit_wall_s": wall, "per_class_recall": per_class, "n_parameters": model.n_parameters(),
               "command": shlex.join(["python", "scripts/train_own.py", *sys.argv[1:]])}
    atomic_write_json(f"{args.out}/metrics.json", metrics)
    print(f"{args.family} seed {args.seed}: test accuracy {metrics['test_accuracy']:.4f}, "
          f"trained in {train_time:.1f}s -> {args.out}")


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
