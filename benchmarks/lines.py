"""The structure step, rules against the learned line finder, on pages whose printed lines and
handwriting are known apart: MNIST *test* digits drawn on paper (testing/paper.py), as ink maps.

    python benchmarks/lines.py [--pages 60] [--model runs/lines/line-model.onnx]

Per kind of paper: the share of printed-line ink taken out, of handwriting ink kept, and of pages
where next to nothing of the lines is left (under a tenth). The learned finder is the shipped one
(reader/assets/line-model.onnx) or --model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from _cpu import print_cpu
from digitlab.data import load
from digitlab.reader import structure
from digitlab.testing.corpus import mnist_digit
from digitlab.testing.paper import layout

KINDS = ("box", "comb", "ruled", "squared", "underline")


def page(images: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 ink map, handwriting mask, printed-line mask not under handwriting)."""
    n = int(rng.integers(3, 7)) if kind == "comb" else 1
    height = int(rng.integers(30, 110))
    inks = [mnist_digit(images[i], height, rng) for i in rng.integers(len(images), size=n)]
    writing, lines = layout(inks, kind, rng)
    x = np.maximum(writing, lines * rng.uniform(0.3, 1.0))
    return (x * 255).round().astype(np.uint8), writing > 0.5, (lines > 0.5) & (writing < 0.05)


def main() -> None:
    print_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages", type=int, default=60, help="pages per kind")
    ap.add_argument("--model", help="a line-model.onnx (default: the shipped one)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    xt, _ = load("mnist", "test")
    finder = structure.LineFinder(Path(args.model)) if args.model else structure.line_finder()
    methods = {"rules": structure.remove_by_rules}
    if finder is not None:
        methods["learned"] = lambda x: structure.remove_structure(x, finder)
    print(f"\n{args.pages} pages per kind (seed {args.seed}); lines out / handwriting kept / pages with < 10% "
          "of the lines left:")
    print(f"  {'kind':<10} " + " ".join(f"{name:>26}" for name in methods))
    for kind in KINDS:
        rng = np.random.default_rng([args.seed, len(kind)])
        pages = [page(xt, kind, rng) for _ in range(args.pages)]
        cells = []
        for remove in methods.values():
            out, kept, clean = [], [], []
            for x, writing, lines in pages:
                y, _ = remove(x)
                left = (y[lines] > 0).mean() if lines.any() else 0.0
                out.append(1 - left)
                kept.append((y[writing] > 0).mean())
                clean.append(left < 0.1)
            cells.append(f"{100 * np.mean(out):6.1f}% {100 * np.mean(kept):6.1f}% {100 * np.mean(clean):6.1f}%")
        print(f"  {kind:<10} " + " ".join(f"{c:>26}" for c in cells))


if __name__ == "__main__":
    main()
