"""Training throughput (images/s) of the neural families: float32 against bfloat16 autocast, and
channels-last against the default layout, all in one run (same-run ratios are fair on a busy machine).

    PYTHONPATH=src python benchmarks/neural_speed.py [--seconds 8] [--families mlp cnn fast best]
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 PYTHONPATH=src python benchmarks/neural_speed.py

The second line approximates an AVX2-only CPU on an AVX-512 one: ATen's kernels limited to AVX2 and
oneDNN's (the convolutions) too; without ONEDNN_MAX_CPU_ISA oneDNN would still use AVX-512 and AMX.
Times full training steps (forward, backward, Adam) on random batches of each family's batch size,
with the thread count torch picks (set OMP_NUM_THREADS or --threads to change it).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from _cpu import print_cpu
from digitlab.lab.experiment import make_model
from digitlab.lab.precision import autocast, resolve_precision


def stepper(family: str, precision: str, channels_last: bool):
    """One training step (forward, backward, Adam) of `family` on a fixed random batch."""
    model = make_model(family)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = model.net.to(memory_format=layout).train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    x = torch.randn(model.config.batch_size, 1, 28, 28).contiguous(memory_format=layout)
    y = torch.randint(0, 10, (len(x),))

    def step() -> int:
        with autocast(x.device, precision):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return len(x)

    for _ in range(3):  # warm-up: oneDNN picks and caches its kernels
        step()
    return step


def images_per_s(steps: dict, seconds: float, rounds: int = 4) -> dict:
    """Best images/s of each setup over `rounds` interleaved rounds: on a shared machine every setup
    sees the same mix of quiet and busy moments, and the best round is the least disturbed."""
    best = dict.fromkeys(steps, 0.0)
    for _ in range(rounds):
        for name, step in steps.items():
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < seconds / rounds:
                n += step()
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    parser.add_argument("--families", nargs="+", default=["mlp", "cnn", "fast", "best", "resnet34"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print_cpu()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"ATen {torch.backends.cpu.get_cpu_capability()}; --precision auto picks {resolve_precision('auto')} here")
    print(f"{'family':<10} {'fp32 img/s':>11} {'fp32 NCHW':>10} {'bf16 img/s':>11} {'bf16/fp32':>10} "
          f"{'NCHW/NHWC':>10}")
    for family in args.families:
        setups = {"fp32": stepper(family, "fp32", True), "nchw": stepper(family, "fp32", False),
                  "bf16": stepper(family, "bf16", True)}
        speed = images_per_s(setups, args.seconds)
        fp32, nchw, bf16 = speed["fp32"], speed["nchw"], speed["bf16"]
        print(f"{family:<10} {fp32:>11.0f} {nchw:>10.0f} {bf16:>11.0f} {bf16 / fp32:>10.2f} {nchw / fp32:>10.2f}",
              flush=True)


if __name__ == "__main__":
    main()
