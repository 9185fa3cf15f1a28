"""How long `digitlab predict one.png` takes from process start to the printed answer.

    python benchmarks/startup.py [--runs 9] [--image PATH]

Runs the command in fresh processes (`python -m digitlab.cli predict IMAGE`, the interpreter this script
runs under) and prints each wall time, the median and the CPU. Without --image it writes a 280x280
canvas PNG of the first MNIST test digit (needs the dataset; DIGITLAB_DATA) to a temporary folder.
Target: a median under 0.4 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _cpu import print_cpu  # noqa: E402 - the benchmarks folder is not a package

TARGET_S = 0.4


def canvas_png(folder: Path) -> Path:
    from PIL import Image

    from digitlab.data import load

    x, _ = load("mnist", "test")
    path = folder / "one.png"
    Image.fromarray(255 - x[0]).resize((280, 280), Image.BICUBIC).save(path)
    return path


def run_once(image: Path) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "digitlab.cli", "predict", str(image)],
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--image", help="the image to predict (default: a canvas PNG of MNIST test digit 0)")
    args = ap.parse_args()
    print_cpu()
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(args.image) if args.image else canvas_png(Path(tmp))
        run_once(image)  # warm the file cache: every later run starts the same way
        times = []
        for _ in range(args.runs):
            seconds, answer = run_once(image)
            times.append(seconds)
    median = statistics.median(times)
    print(f"answer: {answer}")
    print(f"runs (s): {' '.join(f'{t:.3f}' for t in times)}")
    print(f"median process start -> answer: {median:.3f} s (target < {TARGET_S} s: "
          f"{'meets' if median < TARGET_S else 'misses'})")


if __name__ == "__main__":
    main()
