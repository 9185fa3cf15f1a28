"""Fine-tuning on simulated writers' handwriting: how much k examples per digit teach, and what MNIST loses.

    python benchmarks/finetune.py [--writers strong|mild] [--split test|dev] [--ks 1,5,10,20] [--methods style]
                                  [--only 0,6] [--set key=value ...] [--json FILE]

Each writer (digitlab.testing.writers: STRONG_WRITERS, ten hands far from MNIST's, or the six mild
WRITERS) restyles MNIST digits: 20 per digit to learn from (the first k are used) and the others held
out. For each writer, k and method, a copy of the base model is fine-tuned exactly as `digitlab finetune`
does (lab/finetune.adapt, the same rehearsal sample) and measured on the writer's held-out digits and on
MNIST digits the writer's examples did not come from.

--split test (the figures in BENCHMARKS.md): the writers write disjoint MNIST *test* digits, 20 + 50 per
digit each; MNIST accuracy is on the test set minus the writer's 700 source digits. Nothing measured
here was used to choose a setting.

--split dev (for choosing settings): the writers write MNIST *training* digits of the seed-0 hold-out
(the 5,000 images the bundled model and fine-tuning never train on), 20 + 30 per digit, the same
digits for every writer; MNIST accuracy is on the other 4,500 hold-out images. The test split is not read.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time

import numpy as np

from _cpu import print_cpu
from digitlab import data
from digitlab.lab.finetune import FinetuneConfig, adapt, load_base, rehearsal_sample
from digitlab.testing.writers import STRONG_WRITERS, WRITERS, writer_split


def setting(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    fields = {f.name: f.type for f in dataclasses.fields(FinetuneConfig)}
    if key not in fields:
        raise argparse.ArgumentTypeError(f"unknown setting {key!r}; known: {', '.join(fields)}")
    kind = {"int": int, "float": float, "str": str}[fields[key]]
    return key, kind(value)


def sources(split: str, writer: int, n_writers: int):
    """(images, labels) the writers draw from, the writer's (pool, held-out) indices into them, and the
    plain MNIST digits (images, labels) that measure forgetting."""
    if split == "test":
        x, y = data.load("mnist", "test")
        pool, held = writer_split(y, writer, 20, 50, n_writers)
        rest = np.setdiff1d(np.arange(len(y)), np.concatenate([pool, held]))
        return (x, y), (pool, held), (x[rest], y[rest])
    _, (x, y) = data.holdout(*data.load("mnist", "train"), seed=0)  # fine-tuning never trains on these
    pool, held = writer_split(y, 0, 20, 30, 1)  # the same digits for every writer: each is fine-tuned apart
    rest = np.setdiff1d(np.arange(len(y)), np.concatenate([pool, held]))
    return (x, y), (pool, held), (x[rest], y[rest])


def main() -> None:
    print_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="bundled", help='"bundled", an .onnx file or a model directory')
    ap.add_argument("--writers", default="strong", choices=["strong", "mild"])
    ap.add_argument("--only", help="comma-separated writer numbers (default: every writer)")
    ap.add_argument("--split", default="test", choices=["test", "dev"])
    ap.add_argument("--ks", default="1,5,10,20")
    ap.add_argument("--methods", default="style")
    ap.add_argument("--set", type=setting, action="append", default=[], metavar="KEY=VALUE",
                    help="a FinetuneConfig setting (repeatable), e.g. --set steps=300")
    ap.add_argument("--json", help="also write every figure here")
    ap.add_argument("--device", default="cpu", help="where to fine-tune: cpu (as digitlab finetune does) or cuda")
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    methods = args.methods.split(",")
    writers = STRONG_WRITERS if args.writers == "strong" else WRITERS
    chosen = [int(w) for w in args.only.split(",")] if args.only else range(len(writers))
    overrides = dict(args.set)

    base = load_base(args.base)
    base.device = args.device
    base.net.to(args.device)
    x_old, y_old = rehearsal_sample(FinetuneConfig(**overrides).rehearsal, 0)  # as `digitlab finetune` draws it
    rows = []
    for w in chosen:
        writer = writers[w]
        (x, y), (pool, held), (x_mnist, y_mnist) = sources(args.split, w, len(writers))
        x_pool, y_pool = writer.apply(x[pool], y[pool]), y[pool]
        x_held, y_held = writer.apply(x[held], y[held]), y[held]
        before, mnist_before = base.score(x_held, y_held), base.score(x_mnist, y_mnist)
        base_wrong = base.predict(x_mnist) != y_mnist
        for k in ks:
            for method in methods:
                config = FinetuneConfig(**{"method": method, **overrides})
                model = copy.deepcopy(base)
                t0 = time.perf_counter()
                adapt(model, x_pool[:10 * k], y_pool[:10 * k], x_old, y_old, config)
                seconds = time.perf_counter() - t0
                model.net.to("cpu")  # scored on the CPU, as the reader runs it
                row = {"writer": writer.name, "k": k, "method": method, "settings": overrides,
                       "split": args.split, "writer_before": before, "writer_after": model.score(x_held, y_held),
                       "mnist_before": mnist_before, "mnist_after": model.score(x_mnist, y_mnist),
                       "train_s": seconds,
                       # MNIST digits read wrong, per true digit, before and after: what the hand cost
                       "mnist_wrong_before": np.bincount(y_mnist[base_wrong], minlength=10).tolist(),
                       "mnist_wrong_after": np.bincount(y_mnist[model.predict(x_mnist) != y_mnist],
                                                        minlength=10).tolist()}
                rows.append(row)
                print(f"{w} {writer.name:<48} k={k:<2} {method:<6} writer {before:.4f} -> {row['writer_after']:.4f}  "
                      f"MNIST {mnist_before:.4f} -> {row['mnist_after']:.4f} "
                      f"({100 * (row['mnist_after'] - mnist_before):+.2f} pt)  {seconds:.1f}s", flush=True)
    held_n, mnist_n = len(held), len(y_mnist)
    print(f"\n{args.split} split: each writer's {held_n} held-out digits; MNIST: {mnist_n:,} digits the writer's "
          f"examples did not come from{' (settings: ' + str(overrides) + ')' if overrides else ''}\n")
    print("| writer | k per digit | method | before | after | MNIST change | fine-tune s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['writer']} | {r['k']} | {r['method']} | {r['writer_before']:.1%} | {r['writer_after']:.1%} "
              f"| {100 * (r['mnist_after'] - r['mnist_before']):+.2f} pt | {r['train_s']:.1f} |")
    print("\n| method | k per digit | writers | mean before | mean after | worst after | mean MNIST change (worst) "
          "| mean s (max) |")
    print("|---|---|---|---|---|---|---|---|")
    for method in methods:
        for k in ks:
            sel = [r for r in rows if r["k"] == k and r["method"] == method]
            change = [100 * (r["mnist_after"] - r["mnist_before"]) for r in sel]
            seconds = [r["train_s"] for r in sel]
            print(f"| {method} | {k} | {len(sel)} | {np.mean([r['writer_before'] for r in sel]):.1%} "
                  f"| {np.mean([r['writer_after'] for r in sel]):.1%} | {min(r['writer_after'] for r in sel):.1%} "
                  f"| {np.mean(change):+.2f} pt ({min(change):+.2f}) | {np.mean(seconds):.1f} ({max(seconds):.1f}) |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
