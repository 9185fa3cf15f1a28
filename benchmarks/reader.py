"""How well the reader reads people's images: a realistic generated corpus (digitlab.testing.corpus).

    python benchmarks/reader.py [--model PATH] [--singles 1000] [--save-temperature]

Prints: clean-MNIST accuracy of the model; single-digit accuracy on the corpus; exact-string
accuracy (separate and touching digits); blank -> "no digit"; non-digit rejection at the confidence
threshold that rejects 1% of real digits; ECE before/after temperature scaling; accuracy vs
coverage; and an ablation (each preprocessing step off in turn, plus a plain resize-only baseline).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from digitlab import card, reader
from digitlab.data import load
from digitlab.reader.preprocess import PreprocessConfig, resize_only
from digitlab.testing.corpus import make_corpus


def pct(x: float) -> str:
    return f"{100 * x:6.2f}%"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="ONNX model (default: the bundled one)")
    ap.add_argument("--singles", type=int, default=1000)
    ap.add_argument("--strings", type=int, default=200)
    ap.add_argument("--blanks", type=int, default=100)
    ap.add_argument("--others", type=int, default=300)
    ap.add_argument("--fashion", type=int, default=2000, help="Fashion-MNIST test images as non-digits")
    ap.add_argument("--ablation", type=int, default=400, help="singles used per ablation row")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--save-temperature", action="store_true", help="write the fitted T into the model card")
    args = ap.parse_args()

    model = reader.get_model(args.model)
    t0 = time.perf_counter()
    xt, yt = load("mnist", "test")

    # -- calibration: T fitted on one half of MNIST test (a model may have trained on all of MNIST
    # train), ECE measured on the other half; the rest of the benchmark runs with the fitted T
    raw = model.predict_proba(xt, temperature=1.0)
    fit, held = np.arange(len(xt)) % 2 == 0, np.arange(len(xt)) % 2 == 1
    temperature = reader.fit_temperature(raw[fit], yt[fit])
    model.temperature = temperature
    clean_acc = float((raw.argmax(1) == yt).mean())
    print(f"model: {args.model or 'bundled'}   clean MNIST test accuracy {pct(clean_acc)}")
    ece_before = reader.expected_calibration_error(raw[held], yt[held])
    ece_after = reader.expected_calibration_error(reader.apply_temperature(raw[held], temperature), yt[held])
    print(f"temperature {temperature:.3f} (fitted on the 5,000 even-numbered MNIST test images)   ECE (15 bins) "
          f"on the 5,000 odd-numbered: before (T=1) {pct(ece_before)}, after {pct(ece_after)}")
    if args.save_temperature and args.model:
        note = ("temperature fitted (NLL) on the even-numbered MNIST test images; ECE (15 bins) measured on the "
                f"odd-numbered ones by benchmarks/reader.py: {100 * ece_before:.2f}% before, "
                f"{100 * ece_after:.2f}% after")
        card.update(args.model, temperature=round(temperature, 4), calibration=note)  # inside, beside, .md
        print(f"temperature written to the model card of {args.model}")

    samples = make_corpus(xt, yt, n_single=args.singles, n_strings=args.strings, n_touching=args.strings // 2,
                          n_blank=args.blanks, n_other=args.others, seed=args.seed)
    print(f"corpus: {len(samples)} images generated in {time.perf_counter() - t0:.0f}s (seed {args.seed})")

    # -- single digits
    singles = [s for s in samples if s.kind == "single"]
    results = [reader.classify(s.data, model) for s in singles]
    truth = np.array([int(s.truth) for s in singles])
    labels = np.array([-1 if r["label"] is None else r["label"] for r in results])
    conf = np.array([r["confidence"] for r in results])
    acc = float((labels == truth).mean())
    print(f"\nsingle digits: {pct(acc)} of {len(singles)}  (clean MNIST {pct(clean_acc)}, "
          f"gap {100 * (clean_acc - acc):.2f} pt)")
    styles = sorted({s.style for s in singles})
    print("  by style: " + ", ".join(f"{st} {pct(float((labels == truth)[[s.style == st for s in singles]].mean()))}"
                                    for st in styles))

    # -- rows of digits
    for kind in ("string", "touching"):
        rows = [s for s in samples if s.kind == kind]
        exact = [reader.read(s.data, model).text == s.truth for s in rows]
        print(f"{kind + ' rows':<15} exact: {pct(float(np.mean(exact)))} of {len(rows)}")

    # -- blank
    blanks = [s for s in samples if s.kind == "blank"]
    none = [reader.classify(s.data, model)["status"] == "no digit" for s in blanks]
    print(f"blank -> 'no digit': {pct(float(np.mean(none)))} of {len(blanks)}")

    # -- non-digits: rejected when "no digit" / "not a digit" or confidence below the threshold that
    # rejects 1% of the real digits (those vetoed by ink statistics count among that 1%)
    score = np.where(labels >= 0, conf, 0.0)
    threshold = float(np.quantile(score, 0.01))
    others = [s for s in samples if s.kind == "other"]
    xf, _ = load("fashion-mnist", "test")
    fashion = list(xf[np.random.default_rng(0).permutation(len(xf))[: args.fashion]])
    print(f"\nnon-digit rejection at confidence < {threshold:.3f} (rejects {pct(float((score < threshold).mean()))} "
          f"of real digits; {int((labels < 0).sum())} of them vetoed as blank / not a digit):")
    for name, items in (("noise/scribbles/letters", [s.data for s in others]), ("Fashion-MNIST", fashion)):
        res = [reader.classify(d, model) for d in items]
        rejected = [r["label"] is None or r["confidence"] < threshold for r in res]
        print(f"  {name:<24} {pct(float(np.mean(rejected)))} of {len(items)} rejected")

    # -- accuracy vs coverage
    print("\naccuracy vs coverage (single digits, by min_confidence):")
    print(f"  {'min_conf':>8} {'coverage':>9} {'accuracy':>9}")
    for t in (0.0, 0.5, 0.7, 0.9, 0.95, 0.99):
        keep = conf >= t
        a = float((labels[keep] == truth[keep]).mean()) if keep.any() else float("nan")
        print(f"  {t:>8.2f} {pct(float(keep.mean())):>9} {pct(a):>9}")

    # -- ablation
    n = min(args.ablation, len(singles))
    print(f"\nablation (single-digit accuracy on the first {n} corpus digits):")
    full = float((labels[:n] == truth[:n]).mean())
    print(f"  {'all steps on':<28} {pct(full)}")
    steps = [f.name for f in dataclasses.fields(PreprocessConfig) if f.type in (bool, "bool")]
    for step in steps:
        default = getattr(PreprocessConfig(), step)
        config = PreprocessConfig(**{step: not default})
        got = [reader.classify(s.data, model, config=config)["label"] for s in singles[:n]]
        verb = "on" if not default else "off"
        print(f"  {step + ' ' + verb:<28} {pct(float((np.array(got) == truth[:n]).mean()))}")
    baseline = np.concatenate([model.predict_proba(resize_only(s.data)[None]) for s in singles[:n]])
    print(f"  {'resize-only baseline':<28} {pct(float((baseline.argmax(1) == truth[:n]).mean()))}")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")


if __name__ == "__main__":
    main()
