"""Time to accuracy: digitlab's `fast` recipe against the pytorch/examples mnist/main.py recipe.

Both train on the same in-memory MNIST tensors on the same machine in one run; both are evaluated
on the full test set at regular points of their training time (evaluation time not counted).
The last line is the headline: `fast`'s training time to 99.0% test accuracy, against its target
for this kind of CPU (10 s with AVX-512, 20 s on an AVX2-only CPU).

    flock /tmp/digitlab-cpu.lock python benchmarks/time_to_accuracy.py --max-seconds 600
    python benchmarks/time_to_accuracy.py --skip-baseline            # fast alone: about a minute
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/time_to_accuracy.py --skip-baseline
                                                                     # approximates an AVX2-only CPU
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _cpu import print_cpu
from digitlab.data import load
from digitlab.lab.callbacks import Callback
from digitlab.lab.loop import Learner, TrainConfig, predict_logits, to_tensor
from digitlab.lab.models import create
from digitlab.lab.precision import native_bf16

THRESHOLDS = (0.985, 0.990, 0.995)


class ExamplesNet(nn.Module):
    """pytorch/examples mnist/main.py, layer for layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)  # cross_entropy(log_softmax) == nll_loss


# The example's defaults: Adadelta lr 1.0, StepLR(step_size=1, gamma=0.7), batch 64, 14 epochs.
EXAMPLES_CONFIG = TrainConfig(epochs=14, batch_size=64, lr=1.0, schedule="step", step_gamma=0.7,
                              optimizer="adadelta", channels_last=False)


class StopTraining(Exception):
    pass


class EvalEvery(Callback):
    """Evaluates on the test set each time `every` more seconds of training have passed; its own time
    is subtracted from the clock. Stops the run after `max_seconds` of training."""

    def __init__(self, x_test, y_test, every: float, max_seconds: float = float("inf")) -> None:
        self.x_test, self.y_test, self.every, self.max_seconds = x_test, y_test, every, max_seconds
        self.points: list[tuple[float, float]] = []  # (training seconds, test accuracy)
        self.start, self.paused, self.next_eval = time.perf_counter(), 0.0, every

    def on_train_begin(self, learner) -> None:
        self.start = time.perf_counter()

    def train_seconds(self) -> float:
        return time.perf_counter() - self.start - self.paused

    def on_batch_end(self, state) -> None:
        trained = self.train_seconds()
        if trained >= self.next_eval:
            self.evaluate(state.net, trained)
        if trained >= self.max_seconds:
            raise StopTraining

    def evaluate(self, net: nn.Module, trained: float) -> None:
        t0 = time.perf_counter()
        accuracy = float((predict_logits(net, self.x_test).argmax(1) == self.y_test).float().mean())
        net.train()
        self.points.append((trained, accuracy))
        self.next_eval = trained + self.every
        print(f"  {trained:7.1f}s  test accuracy {accuracy:.4f}", flush=True)
        self.paused += time.perf_counter() - t0


def time_to(points: list[tuple[float, float]], threshold: float) -> float | None:
    return next((t for t, acc in points if acc >= threshold), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fast-seeds", type=int, default=1, help="train the fast recipe with this many seeds "
                        "(seed, seed+1, ...); the table uses the first")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=600, help="training-time cap for the baseline")
    parser.add_argument("--fast-every", type=float, default=1.0, help="seconds of training between evaluations")
    parser.add_argument("--baseline-every", type=float, default=10.0)
    parser.add_argument("--skip-baseline", action="store_true", help="time the fast recipe alone")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--layout", default=None, choices=["channels-last", "nchw"],
                        help="default: the recipe's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print_cpu()
    # The target depends on the CPU torch may use: native bf16 means an AVX-512 (BF16/AMX) CPU.
    avx512 = torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")
    target = 10.0 if avx512 else 20.0
    print(f"torch {torch.__version__}, {args.threads} threads, ATen {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16: {native_bf16()}; target for `fast`: 99.0% within {target:.0f} s of training")
    (x, y), (x_test, y_test) = load("mnist", "train"), load("mnist", "test")
    xt, yt = to_tensor(x), torch.from_numpy(y.astype(np.int64))
    xv, yv = to_tensor(x_test), torch.from_numpy(y_test.astype(np.int64))

    runs = []
    for seed in range(args.seed, args.seed + args.fast_seeds):
        settings = {"precision": args.precision}
        if args.layout:
            settings["channels_last"] = args.layout == "channels-last"
        fast = create("fast", seed=seed, **settings)
        print(f"fast recipe (seed {seed}, {args.threads} threads, precision {args.precision}"
              f"{', ' + args.layout if args.layout else ''})")
        fast_eval = EvalEvery(xv, yv, args.fast_every)
        fast.fit(x, y, callbacks=[fast_eval])
        fast_eval.evaluate(fast.net, fast_eval.train_seconds())
        runs.append((seed, fast_eval))
    if len(runs) > 1:
        print(f"\n{'seed':>4} {'train s':>8} {'final':>7} {'to 99.0%':>9}")
        for seed, ev in runs:
            t = time_to(ev.points, 0.99)
            print(f"{seed:>4} {ev.points[-1][0]:>8.1f} {ev.points[-1][1]:>7.4f} {t and f'{t:.1f}s' or '-':>9}")
        hits = sum((time_to(ev.points, 0.99) or float("inf")) <= target for _, ev in runs)
        print(f">= 99.0% within {target:.0f} s of training: {hits} of {len(runs)} seeds")
    fast_eval = runs[0][1]
    print(f"precision used: {fast.config.precision}")
    if args.skip_baseline:
        headline(fast_eval, target)
        return

    print(f"pytorch/examples mnist recipe (cap {args.max_seconds:.0f}s of training)")
    torch.manual_seed(args.seed)
    base_eval = EvalEvery(xv, yv, args.baseline_every, args.max_seconds)
    learner = Learner(ExamplesNet(), TrainConfig(**{**EXAMPLES_CONFIG.__dict__, "seed": args.seed}), [base_eval])
    try:
        learner.fit(xt, yt)
        capped = False
    except StopTraining:
        capped = True
    base_eval.evaluate(learner.net, base_eval.train_seconds())

    print(f"\n{'accuracy':>9} {'fast':>10} {'baseline':>10} {'speed-up':>9}")
    for threshold in THRESHOLDS:
        f, b = time_to(fast_eval.points, threshold), time_to(base_eval.points, threshold)
        bound = capped and b is None
        fs = f"{f:.1f}s" if f is not None else "not reached"
        bs = f"{b:.1f}s" if b is not None else (f">{base_eval.points[-1][0]:.0f}s" if bound else "not reached")
        ratio = ("-" if f is None else f"{b / f:.1f}x" if b is not None
                 else f">{base_eval.points[-1][0] / f:.1f}x" if bound else "-")
        print(f"{threshold:>9.3f} {fs:>10} {bs:>10} {ratio:>9}")
    print(f"final: fast {fast_eval.points[-1][1]:.4f} after {fast_eval.points[-1][0]:.1f}s; "
          f"baseline {base_eval.points[-1][1]:.4f} after {base_eval.points[-1][0]:.1f}s"
          + (" (capped)" if capped else ""))
    headline(fast_eval, target)


def headline(fast_eval: EvalEvery, target: float) -> None:
    t = time_to(fast_eval.points, 0.99)
    verdict = "not reached" if t is None else f"{t:.1f} s of training"
    met = t is not None and t <= target
    print(f"TIME TO 99.0% (fast): {verdict}; target {target:.0f} s on this CPU kind: {'MET' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
