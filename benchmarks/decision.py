"""How the reader's default decision (recognize.SURE) is chosen: on development seeds of the realistic
suite, never on the benchmark's seed, the lowest confidence threshold at which the answers marked "ok"
are right at least 99.5% of the time in every single-digit category; and how many real digits are
then answered "ok" (the target: 97% or more).

    python benchmarks/decision.py [--seeds 7,77] [--n 150] [--model PATH]
"""

from __future__ import annotations

import argparse

import numpy as np

from _cpu import print_cpu
from digitlab import reader
from digitlab.data import load
from digitlab.reader.recognize import SURE
from digitlab.testing.corpus import FORM_CATEGORIES, SINGLE_CATEGORIES, make_suite

THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.01), 2)
PRECISION, COVERAGE = 0.995, 0.97


def main() -> None:
    print_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="ONNX model (default: the bundled one)")
    ap.add_argument("--seeds", default="7,77", help="development seeds of the suite (never the benchmark's 1234)")
    ap.add_argument("--n", type=int, default=150, help="single digits per category and seed")
    args = ap.parse_args()
    model = reader.get_model(args.model)
    xt, yt = load("mnist", "test")
    style, conf, right, read = [], [], [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        suite = make_suite(xt, yt, n=args.n, n_rows=0, n_blank=0, n_other=0, seed=seed)
        for s in (s for s in suite if s.kind == "single"):
            r = reader.classify(s.data, model, min_confidence=0.0)
            style.append(s.style)
            conf.append(r["confidence"])
            right.append(r["guess"] is not None and str(r["guess"]) == s.truth)
            read.append(r["status"] in ("ok", "unsure"))
    style, conf, right, read = map(np.array, (style, conf, right, read))
    categories = [c for c in (*SINGLE_CATEGORIES, *FORM_CATEGORIES) if (style == c).any()]
    print(f"\n{len(style):,} digits, seeds {args.seeds}; per category, the lowest threshold whose ok answers are "
          f">= {100 * PRECISION:.1f}% right, and the ok share there:")
    needed = []
    for c in categories:
        sel = style == c
        fit = [t for t in THRESHOLDS if (ok := sel & read & (conf >= t)).any() and right[ok].mean() >= PRECISION]
        t = fit[0] if fit else None
        needed.append(t if t is not None else 1.0)
        share = (sel & read & (conf >= t)).sum() / sel.sum() if t is not None else 0.0
        print(f"  {c:<20} {'none' if t is None else f'{t:.2f}':>6}   ok {100 * share:5.1f}%   "
              f"(read right {100 * right[sel].mean():5.1f}%)")
    overall = max(needed)
    print(f"\nevery category: threshold {overall:.2f} (the reader's SURE is {SURE})")
    for t in sorted({overall, SURE}):
        ok = read & (conf >= t)
        worst = min(right[ok & (style == c)].mean() if (ok & (style == c)).any() else 1.0 for c in categories)
        print(f"  at {t:.2f}: ok {100 * ok.mean():5.1f}% of real digits (target >= {100 * COVERAGE:.0f}%), "
              f"ok right {100 * right[ok].mean():6.2f}% overall, {100 * worst:6.2f}% in the worst category")


if __name__ == "__main__":
    main()
