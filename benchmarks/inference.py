"""Inference speed of one trained model: ONNX fp32, ONNX int8 (onnxruntime) and PyTorch eager.

Batch throughput (images/s over the 10,000 test images, all cores), single-image latency p50/p99
of the model call (one thread, one image per call, as the reader predicts: normalization and the
network, logits out), the p50 of `predict_proba` (plus softmax in numpy), and the end-to-end time of a fresh
`python -c "import digitlab.reader.infer; ..."` process that loads the model and predicts one image.

    flock /tmp/digitlab-cpu.lock python benchmarks/inference.py runs/best
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _cpu import print_cpu


def throughput(predict, images: np.ndarray, batch_size: int, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(0, len(images), batch_size):
            predict(images[i:i + batch_size])
        best = min(best, time.perf_counter() - t0)
    return len(images) / best


def latency_us(predict, images: np.ndarray, calls: int) -> tuple[float, float]:
    for i in range(50):  # warm-up
        predict(images[i:i + 1])
    times = []
    for i in range(calls):
        one = images[i % len(images)][None]
        t0 = time.perf_counter()
        predict(one)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e6, times[int(len(times) * 0.99)] * 1e6


def end_to_end_s(onnx_path: Path, runs: int = 5) -> float:
    code = (f"import numpy as np, digitlab.reader.infer as di; m = di.OnnxModel({str(onnx_path)!r}); "
            "x = np.zeros((1, 28, 28), np.uint8); x[0, 5:23, 13:15] = 255; print(int(m.predict(x)[0]))")
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a trained fast/best model directory")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=2000, help="single-image calls for the latency figures")
    args = parser.parse_args()
    print_cpu()

    import torch

    from digitlab.data import load
    from digitlab.lab.export import export
    from digitlab.lab.loop import to_tensor
    from digitlab.lab.models import load as load_model
    from digitlab.reader.infer import OnnxModel

    x_test, y_test = load("mnist", "test")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export(args.model_dir, out=Path(tmp) / "fp32.onnx")
        int8 = export(args.model_dir, out=Path(tmp) / "int8.onnx", quantize="int8")
        for name, path in (("onnx fp32", fp32), ("onnx int8", int8)):
            many, one = OnnxModel(path, threads=0), OnnxModel(path, threads=1)
            accuracy = many.score(x_test, y_test)["accuracy"]
            rows.append((name, accuracy, throughput(many.predict_proba, x_test, args.batch_size),
                         *latency_us(one.logits, x_test, args.calls),
                         latency_us(one.predict_proba, x_test, args.calls)[0]))
        e2e = end_to_end_s(fp32)

    model = load_model(args.model_dir)
    net = model.net.eval()

    @torch.inference_mode()
    def torch_logits(images: np.ndarray) -> np.ndarray:
        return net(to_tensor(images).contiguous(memory_format=torch.channels_last)).numpy()

    def torch_proba(images: np.ndarray) -> np.ndarray:
        return torch.softmax(torch.from_numpy(torch_logits(images)), 1).numpy()

    torch.set_num_threads(2)
    accuracy = float((np.concatenate([torch_proba(x_test[i:i + 1000]) for i in range(0, 10000, 1000)])
                      .argmax(1) == y_test).mean())
    batch = throughput(torch_proba, x_test, args.batch_size)
    torch.set_num_threads(1)
    rows.append(("pytorch eager", accuracy, batch, *latency_us(torch_logits, x_test, args.calls),
                 latency_us(torch_proba, x_test, args.calls)[0]))

    print(f"model {args.model_dir} ({model.family}, {model.n_parameters():,} parameters)")
    print(f"{'runtime':<14} {'accuracy':>8} {'batch img/s':>12} {'call p50':>9} {'call p99':>9} {'proba p50':>10}")
    for name, acc, ips, p50, p99, proba in rows:
        print(f"{name:<14} {acc:>8.4f} {ips:>12,.0f} {p50:>7.0f}us {p99:>7.0f}us {proba:>8.0f}us")
    print(f"int8 / fp32 batch throughput: {rows[1][2] / rows[0][2]:.2f}x; "
          f"onnx fp32 / pytorch: {rows[0][2] / rows[2][2]:.2f}x")
    print(f"end-to-end fresh process (import digitlab.reader.infer, load, predict one image): {e2e * 1000:.0f} ms")


if __name__ == "__main__":
    main()
