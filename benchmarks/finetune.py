"""Fine-tuning on a simulated writer's handwriting: how much k examples per digit teach, and what MNIST loses.

    python benchmarks/finetune.py [--base bundled] [--writers 5] [--ks 1,5,20] [--methods fastai,all,head]

Each writer (digitlab.testing.writers: a fixed slant, aspect, stroke width, page wobble and habits
such as crossed 7s) restyles disjoint MNIST test digits: 20 per digit to learn from (the first k are
used) and 50 per digit held out. For each writer, k and method, a copy of the base model is
fine-tuned exactly as `digitlab finetune` does (lab/finetune.adapt, with 3,000 MNIST training images
rehearsed) and measured on the writer's 500 held-out digits and on the MNIST test set minus the
writer's 200 source digits. Methods: fastai (head with the body frozen, then all layers at
discriminative LRs), all (every layer at one LR, as many epochs), head (the head only).
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np

from _cpu import print_cpu
from digitlab import data
from digitlab.lab.finetune import FinetuneConfig, adapt, load_base, rehearsal_sample
from digitlab.testing.writers import WRITERS, writer_split


def main() -> None:
    print_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="bundled", help='"bundled", an .onnx file or a model directory')
    ap.add_argument("--writers", type=int, default=5)
    ap.add_argument("--ks", default="1,5,20")
    ap.add_argument("--methods", default="fastai,all,head")
    ap.add_argument("--json", help="also write every figure here")
    ap.add_argument("--device", default="cpu", help="where to fine-tune: cpu (as digitlab finetune does) or cuda")
    args = ap.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    methods = args.methods.split(",")

    x_test, y_test = data.load("mnist", "test")
    base = load_base(args.base)
    base.device = args.device
    base.net.to(args.device)
    x_old, y_old = rehearsal_sample(FinetuneConfig().rehearsal, 0)
    base_mnist = base.predict(x_test)
    rows = []
    for w, writer in enumerate(WRITERS[:args.writers]):
        pool, held = writer_split(y_test, w)
        x_pool, y_pool = writer.apply(x_test[pool], y_test[pool]), y_test[pool]
        x_held, y_held = writer.apply(x_test[held], y_test[held]), y_test[held]
        rest = np.setdiff1d(np.arange(len(y_test)), pool)  # MNIST test without this writer's sources
        before = base.score(x_held, y_held)
        mnist_before = float((base_mnist[rest] == y_test[rest]).mean())
        for k in ks:
            for method in methods:
                model = copy.deepcopy(base)
                t0 = time.perf_counter()
                adapt(model, x_pool[:10 * k], y_pool[:10 * k], x_old, y_old, FinetuneConfig(method=method))
                seconds = time.perf_counter() - t0
                model.net.to("cpu")  # scored on the CPU, as the reader runs it
                row = {"writer": writer.name, "k": k, "method": method, "writer_before": before,
                       "writer_after": model.score(x_held, y_held), "mnist_before": mnist_before,
                       "mnist_after": model.score(x_test[rest], y_test[rest]), "train_s": seconds}
                rows.append(row)
                print(f"{writer.name:<36} k={k:<2} {method:<6} writer {before:.4f} -> {row['writer_after']:.4f}  "
                      f"MNIST {mnist_before:.4f} -> {row['mnist_after']:.4f}  ({seconds:.1f}s)", flush=True)
    print(f"\nmean over {args.writers} writers (writer: 500 held-out digits each; MNIST: test set minus the "
          "writer's 200 source digits)\n")
    print("| method | k per digit | writer before | writer after | MNIST before | MNIST after | MNIST change "
          "| fine-tune s |")
    print("|---|---|---|---|---|---|---|---|")
    for method in methods:
        for k in ks:
            sel = [r for r in rows if r["k"] == k and r["method"] == method]
            m = {key: float(np.mean([r[key] for r in sel])) for key in
                 ("writer_before", "writer_after", "mnist_before", "mnist_after", "train_s")}
            worst = min(r["mnist_after"] - r["mnist_before"] for r in sel)
            print(f"| {method} | {k} | {m['writer_before']:.2%} | {m['writer_after']:.2%} | {m['mnist_before']:.2%} "
                  f"| {m['mnist_after']:.2%} | {100 * (m['mnist_after'] - m['mnist_before']):+.2f} pt "
                  f"(worst {100 * worst:+.2f}) | {m['train_s']:.1f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
