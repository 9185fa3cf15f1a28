"""Training throughput (images/s) of the neural families, float32 against bfloat16 autocast, same run.

    PYTHONPATH=src python benchmarks/neural_speed.py [--seconds 8] [--families mlp cnn resnet34]

Times full training steps (forward, backward, Adam) on random batches of each family's batch size,
channels-last, with the thread count torch picks (set OMP_NUM_THREADS to change it).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from digitlab.lab.experiment import make_model


def images_per_s(family: str, bf16: bool, seconds: float) -> float:
    model = make_model(family)
    net = model.net.to(memory_format=torch.channels_last).train()
    bs = model.config.batch_size
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn(bs, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (bs,))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):  # warm-up: oneDNN picks and caches its kernels
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    return n * bs / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--families", nargs="+", default=["mlp", "cnn", "resnet34"])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'family':<10} {'float32 img/s':>14} {'bf16 img/s':>11} {'ratio':>6}")
    for family in args.families:
        fp32, bf16 = images_per_s(family, False, args.seconds), images_per_s(family, True, args.seconds)
        print(f"{family:<10} {fp32:>14.0f} {bf16:>11.0f} {bf16 / fp32:>6.2f}")


if __name__ == "__main__":
    main()
