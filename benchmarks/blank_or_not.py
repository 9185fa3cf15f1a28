"""Is a real digit ever called blank, and is a blank ever read as a digit? Larger samples than the suite.

    python benchmarks/blank_or_not.py [--n 1500] [--blanks 600] [--seed 7]

Photos of MNIST test digits (`corpus.render(style="photo")`: coloured paper, a light ramp, often a
soft shadow, texture, noise, JPEG; the digit drawn 120 px high), each read by `reader.classify`:
how many are called "no digit" and how many are not read right. Then blank pictures, both the
suite's mix (canvases, transparent PNGs, paper, photos, scans) and photos of blank paper alone: how
many are read as anything but "no digit".
"""

from __future__ import annotations

import argparse

import numpy as np

from _cpu import print_cpu
from digitlab import reader
from digitlab.data import load
from digitlab.testing.corpus import blank, mnist_digit, render


def main() -> None:
    print_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1500, help="photos of digits")
    ap.add_argument("--blanks", type=int, default=600, help="blank pictures of each kind")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    model = reader.bundled()
    x, y = load("mnist", "test")

    rng = np.random.default_rng(args.seed)
    called_blank = misread = 0
    for _ in range(args.n):
        i = int(rng.integers(len(x)))
        data, _ = render(mnist_digit(x[i], 120, rng), rng, style="photo")
        result = reader.classify(data, model)
        called_blank += result["status"] == "no digit"
        misread += result["label"] != y[i]
    print(f"photos of digits: {called_blank} of {args.n} called blank, {misread} not read right "
          f"({100 * (1 - misread / args.n):.2f}% right)")

    mixed = sum(reader.classify(blank(rng), model)["status"] != "no digit" for _ in range(args.blanks))
    photos = 0
    for _ in range(args.blanks):
        h, w = int(rng.integers(64, 700)), int(rng.integers(64, 700))
        data, _ = render(np.zeros((1, 1), np.float32), rng, canvas=(h, w), style="photo")
        photos += reader.classify(data, model)["status"] != "no digit"
    print(f"blank pictures read as a digit: {mixed} of {args.blanks} of every kind, {photos} of {args.blanks} "
          f"photos of blank paper")


if __name__ == "__main__":
    main()
