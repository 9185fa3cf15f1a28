"""`digitlab predict FOLDER` throughput: worker processes on every core vs one process, same run.

    python benchmarks/predict_folder.py [--n 10000] [--folder DIR] [--jobs 0]

Writes N 280x280 canvas PNGs (MNIST test digits drawn black on white, scaled 10x, RGB, as a web
canvas exports them) into DIR (a temporary folder by default), then times the real command, start
to finish (interpreter start, model load, workers, output), once with `--jobs 1` and once with
`--jobs N` (0: one per core). Prints images/s for each, the CPU time per image (all processes: on a
shared machine the figure that holds), the speed-up, and checks that both runs printed the same
answers in the same order, and their accuracy against the MNIST labels.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from _cpu import print_cpu
from digitlab.data import load
from digitlab.files import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]


def make_canvases(folder: Path, n: int) -> None:
    images, labels = load("mnist", "test")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"{i:05d}-{labels[i % len(labels)]}.png"
        if not path.exists():
            digit = Image.fromarray(255 - images[i % len(images)]).resize((280, 280), Image.BILINEAR)
            buf = io.BytesIO()
            digit.convert("RGB").save(buf, format="PNG")
            atomic_write_bytes(path, buf.getvalue())  # a killed run leaves no half image to reuse


def timed_predict(folder: Path, jobs: int, model: str | None = None) -> tuple[float, float, list[dict]]:
    """(wall seconds, CPU seconds of the command and its workers, the answers)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "digitlab.cli", "predict", str(folder), "--json", "--no-progress", "--jobs", str(jobs)]
    cmd += ["--model", model] if model else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-500:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu, [json.loads(line) for line in done.stdout.splitlines()]


def measure(n: int, folder: str | None = None, jobs: int = 0, model: str | None = None) -> float:
    """Makes the canvases, times `predict FOLDER` in one process and over `jobs` workers, prints the
    figures; returns the workers' images/s."""
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(folder or tmp) / f"canvas-{n}"
        t0 = time.perf_counter()
        make_canvases(where, n)
        print(f"{n:,} canvas PNGs (280x280 RGB) in {where} ({time.perf_counter() - t0:.1f} s to make)")
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        single_s, single_cpu, single = timed_predict(where, 1, model)
        multi_s, multi_cpu, multi = timed_predict(where, jobs, model)
        workers = jobs or cpus
        accuracy = sum(r["label"] == int(Path(r["file"]).stem.split("-")[1]) for r in multi) / len(multi)
        # CPU seconds (all processes) hold up on a shared machine, where wall time measures the others' load
        print(f"one process:        {n / single_s:8,.0f} images/s ({single_s:.1f} s, whole command; "
              f"CPU {single_cpu:.1f} s, {1e3 * single_cpu / n:.2f} ms per image)")
        print(f"{workers} worker processes: {n / multi_s:8,.0f} images/s ({multi_s:.1f} s, whole command; "
              f"CPU {multi_cpu:.1f} s, {1e3 * multi_cpu / n:.2f} ms per image)  "
              f"speed-up {single_s / multi_s:.2f}x on {cpus} CPUs")
        print(f"same answers in the same order: {single == multi}; accuracy {100 * accuracy:.2f}%")
        return n / multi_s


def main() -> None:
    print_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="number of canvas images")
    ap.add_argument("--folder", help="where to write them (kept; reused when already there)")
    ap.add_argument("--jobs", type=int, default=0, help="worker processes for the parallel run (0: one per core)")
    ap.add_argument("--model", help="an ONNX model (default: the bundled one)")
    args = ap.parse_args()
    measure(args.n, args.folder, args.jobs, args.model)


if __name__ == "__main__":
    main()
