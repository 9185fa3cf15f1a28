"""Beyond one machine, measured: reading N canvas images into Parquet four ways, and DDP training.

    python benchmarks/scale.py [--n 20000] [--folder DIR] [--train-limit 6000]

On the same N 280x280 canvas PNGs (benchmarks/predict_folder.py's), packed into Parquet shards
(`digitlab pack`), times the real command `digitlab predict SHARDS --out R.parquet`, start to finish:
  1. one process (--engine local --jobs 1),
  2. local worker processes, one per core (--engine local),
  3. Ray on 1 node (--engine ray: Ray started by the command on this machine, one actor per CPU),
  4. Ray on a simulated 2-node cluster (ray.cluster_utils.Cluster: a head and a worker node of 1 CPU
     each, 200 MB object store each; the command joins it with --address),
and checks that all four wrote the same answers. Prints images/s (whole command, and the reading
alone as the command reports it, after Ray's start), the scaling efficiency (speed-up over one
process / CPUs used) and the load average before each run: on a shared machine the figures move
with the others' load. Then `digitlab train cnn --limit L --epochs E` in one process (all cores' threads, then one
thread) and on 2 DDP processes (`--nproc 2`, gloo, one thread each): training images/s from
metrics.json (time inside the training loop; rank 0's, which waits for the other at every step).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _cpu import print_cpu
from predict_folder import make_canvases

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
NODE_STORE = 200 * 1024 * 1024


def load() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def children_cpu() -> float:
    """CPU seconds of this process's finished children and theirs (the command, its workers, a Ray
    it started and shut down): the cost, which a busy machine inflates far less than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def digitlab(*args: str, check: bool = True) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "digitlab.cli", *args], env=ENV, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if check and done.returncode not in (0, 1):  # 1: some inputs failed, which is an answer
        sys.exit(f"digitlab {' '.join(args)} failed ({done.returncode}): {done.stderr[-1500:]}")
    return elapsed, done


def read_answers(out: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    table = pq.read_table(out, columns=["file", "json"]).to_pydict()
    return dict(zip(table["file"], table["json"], strict=True))


def timed_read(label: str, shards: Path, out: Path, n: int, cpus: int, single: float | None,
               *extra: str) -> tuple[float, dict[str, str]]:
    before, cpu = load(), children_cpu()
    elapsed, done = digitlab("predict", str(shards), "--out", str(out), "--no-progress", *extra)
    cpu = children_cpu() - cpu
    reported = re.search(r"read now with the \w+ engine, ([\d,]+) images/s", done.stderr)
    inner = f"; reading alone {reported.group(1)} images/s" if reported else ""
    rate = n / elapsed
    efficiency = f"  speed-up {rate / single:.2f}x, efficiency {rate / single / cpus:.0%} of {cpus} CPUs" \
        if single else ""
    # a Ray cluster outside the command (the simulated one) is not its child: its CPU is not in here
    cost = f", CPU {1e3 * cpu / n:.2f} ms per image" if "--address" not in extra else ""
    print(f"{label:<28} {rate:8,.0f} images/s ({elapsed:.1f} s, whole command{inner}{cost}){efficiency}  "
          f"[{before}]", flush=True)
    return rate, read_answers(out)


def measure_reading(n: int, folder: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(folder or tmp)
        canvases, shards = where / f"canvas-{n}", where / f"canvas-{n}-shards"
        t0 = time.perf_counter()
        make_canvases(canvases, n)
        if not shards.is_dir():
            digitlab("pack", str(canvases), "--out", str(shards))
        count = len(list(shards.glob("*.parquet")))
        print(f"{n:,} canvas PNGs (280x280 RGB) packed into {count} Parquet shard(s) in {where} "
              f"({time.perf_counter() - t0:.1f} s to make)", flush=True)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        runs = Path(tmp) / "runs"
        single, reference = timed_read("one process", shards, runs / "one.parquet", n, 1, None,
                                       "--engine", "local", "--jobs", "1")
        answers = [timed_read(f"{cores} local worker processes", shards, runs / "local.parquet", n, cores, single,
                              "--engine", "local")[1]]
        answers.append(timed_read("Ray, 1 node", shards, runs / "ray1.parquet", n, cores, single,
                                  "--engine", "ray")[1])
        answers.append(ray_two_nodes(shards, runs / "ray2.parquet", n, single))
        print(f"same answers all four ways: {all(a == reference for a in answers)} ({len(reference):,} inputs)")


def ray_two_nodes(shards: Path, out: Path, n: int, single: float) -> dict[str, str]:
    import ray
    from ray.cluster_utils import Cluster

    cpu = children_cpu()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": NODE_STORE,
                                                            "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=NODE_STORE)
        cluster.wait_for_nodes()
        answers = timed_read("Ray, 2 simulated nodes", shards, out, n, 2, single,
                             "--engine", "ray", "--address", cluster.address)[1]
    finally:
        ray.shutdown()
        cluster.shutdown()
    # the cluster's processes are this process's children: counted once shut down and reaped
    print(f"{'':<28} CPU {1e3 * (children_cpu() - cpu) / n:.2f} ms per image (command, both nodes' actors and "
          f"Ray's own processes, from the cluster's start to its shutdown)", flush=True)
    return answers


def measure_training(limit: int, epochs: int) -> None:
    """One process with torch's threads on every core and with one thread (on a busy machine, one is
    often faster: no spinning OpenMP threads), then 2 DDP processes of one thread each."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    best = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for nproc, threads in ((1, cores), (1, 1), (2, 1)):
            before = load()
            out = Path(tmp) / f"cnn-{nproc}-{threads}"
            elapsed, done = digitlab("train", "cnn", "--limit", str(limit), "--epochs", str(epochs), "--nproc",
                                     str(nproc), "--threads", str(threads), "--out", str(out))
            if done.returncode != 0:
                sys.exit(f"train --nproc {nproc} failed: {done.stderr[-1500:]}")
            m = json.loads((out / "metrics.json").read_text())
            rate = m["train_images_per_s"]
            gain = f"  {rate / best:.2f}x the best single process" if nproc > 1 else ""
            best = max(best, rate) if nproc == 1 else best
            print(f"train cnn, {nproc} DDP process{'es' if nproc > 1 else ''} x {threads} thread"
                  f"{'s' if threads > 1 else ''}: {rate:7,.0f} training images/s ({m['train_images']:,} images x "
                  f"{epochs} epochs, {m['train_time_s']:.1f} s in the loop, {elapsed:.0f} s whole command; test "
                  f"accuracy {m['test_accuracy']:.4f}){gain}  [{before}]", flush=True)


def main() -> None:
    print_cpu()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="number of canvas images")
    ap.add_argument("--folder", help="where to write the canvases and shards (kept; reused when already there)")
    ap.add_argument("--train-limit", type=int, default=6000, help="training images for the DDP figures (0: skip)")
    ap.add_argument("--train-epochs", type=int, default=2)
    args = ap.parse_args()
    measure_reading(args.n, args.folder)
    if args.train_limit:
        measure_training(args.train_limit, args.train_epochs)


if __name__ == "__main__":
    main()
