"""Trains one family with some settings changed, for several seeds, and prints one JSON line per run.

Used to choose recipes (on a GPU machine when one is lent: `--device cuda`), e.g.

    python scripts/sweep.py best --set epochs=30 --seeds 0,1,2 --out sweeps/best-e30

Each run's test-set probabilities are saved as `<out>/seed<S>.npy`, so ensembles of runs can be
scored afterwards without retraining. `--holdout` trains on the 55,000 images `digitlab train` uses
(5,000 held out); otherwise on all 60,000, as scripts/train_own.py does for the shipped model.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import time
from pathlib import Path

import numpy as np

from digitlab.data import load
from digitlab.files import atomic_write_bytes
from digitlab.lab.experiment import holdout
from digitlab.lab.models import create


def parse_setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a plain string, e.g. optimizer=sgd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config setting")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--holdout", action="store_true", help="train on 55,000 images, as digitlab train does")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    settings = dict(parse_setting(s) for s in args.set)
    (x, y), (x_test, y_test) = load("mnist", "train"), load("mnist", "test")
    out = Path(args.out)
    for seed in [int(s) for s in args.seeds.split(",")]:
        xs, ys = holdout(x, y, seed)[0] if args.holdout else (x, y)
        model = create(args.family, seed=seed, device=args.device, **settings)
        t0 = time.perf_counter()
        model.fit(xs, ys)
        wall = time.perf_counter() - t0
        proba = model.predict_proba(x_test)
        buf = io.BytesIO()
        np.save(buf, proba.astype(np.float32))
        atomic_write_bytes(out / f"seed{seed}.npy", buf.getvalue())
        print(json.dumps({"family": args.family, "settings": settings, "seed": seed, "device": args.device,
                          "train_images": len(xs), "test_accuracy": float((proba.argmax(1) == y_test).mean()),
                          "lr": getattr(model.config, "lr", None), "fit_wall_s": round(wall, 1)}), flush=True)


if __name__ == "__main__":
    main()
