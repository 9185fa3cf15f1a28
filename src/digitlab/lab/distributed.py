"""Training one model on several processes or machines: torch DistributedDataParallel, torchrun's way.

    digitlab train cnn --nproc 2 --out runs/cnn                 # 2 processes on this machine
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 2 --rdzv-endpoint HOST:29500 \\
        -m digitlab.cli train cnn --out runs/cnn                 # the same, on each of 2 machines

Each process is a rank. torchrun (or `--nproc`, which starts the ranks exactly as torchrun does:
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT in the environment) runs the one training
command in every rank; `init_from_env` joins them into a process group (gloo on the CPU, nccl on
CUDA). Every rank holds the whole dataset in memory and trains on its share of each epoch's seeded
permutation (`shard_positions`, DistributedSampler's split); DDP averages the gradients, so all
ranks take the same steps. The global batch is the family's batch size, split over the ranks: the
same steps, LR schedule and so the same recipe as one process. Only rank 0 writes (checkpoints,
history, metrics, config.json, which records the world size).

Imports torch only in the functions that need it: `world()` answers (0, 1) in a torch-free process,
so a classical family's run never loads it.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
import time

from digitlab.errors import DigitlabError

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
RANK_SEED = 7919  # added per rank to the per-epoch seeds of dropout and augmentation: ranks draw apart
LAUNCHER_PID = "DIGITLAB_LAUNCHER_PID"


def launched() -> bool:
    """Whether this process is a rank started by torchrun or `--nproc` (and so must join a group)."""
    return all(k in os.environ for k in ENV) and int(os.environ["WORLD_SIZE"]) > 1


def world() -> tuple[int, int]:
    """(rank, world size) of this process's group; (0, 1) outside one."""
    if "torch" not in sys.modules:
        return 0, 1
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def init_from_env(device: str | None) -> str:
    """Joins the process group the environment describes; returns the device this rank trains on
    (cuda:LOCAL_RANK for CUDA: one GPU per rank)."""
    import torch
    import torch.distributed as dist

    _die_with_launcher()
    cuda = (device or "cpu").startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise DigitlabError(f"--device {device}: CUDA is not available here")
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
        torch.cuda.set_device(device)
    try:
        dist.init_process_group("nccl" if cuda else "gloo", init_method="env://")
    except (RuntimeError, ValueError) as e:
        raise DigitlabError(f"cannot join the training group at {os.environ['MASTER_ADDR']}:"
                            f"{os.environ['MASTER_PORT']} ({str(e).splitlines()[0]})") from None
    return device or "cpu"


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def shard_positions(n: int, rank: int, world_size: int):
    """Which positions of an epoch's permutation of n images this rank trains on: every world_size-th
    from `rank`, as DistributedSampler does, the list padded by wrapping around so that every rank
    gets ceil(n / world_size) and all take the same number of steps. None for one process."""
    import torch

    if world_size == 1:
        return None
    per_rank = math.ceil(n / world_size)
    return (torch.arange(per_rank * world_size) % n)[rank::world_size]


def wrap(net, device: str):
    """The network as the training loop calls it: DDP in a group (gradients averaged in backward),
    else itself. The Learner keeps the bare network for saving, evaluation and checkpoints."""
    if world()[1] == 1:
        return net
    import torch
    from torch.nn.parallel import DistributedDataParallel

    where = torch.device(device)
    return DistributedDataParallel(net, device_ids=[where.index or 0] if where.type == "cuda" else None)


def sum_across(*values):
    """Each value (a number or a 0-d tensor) summed over the ranks, as floats: the epoch's loss and
    accuracy counts over every rank's images."""
    import torch
    import torch.distributed as dist

    if world()[1] == 1:
        return tuple(float(v) for v in values)
    device = values[0].device if isinstance(values[0], torch.Tensor) else "cpu"
    stacked = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device) for v in values])
    if dist.get_backend() == "nccl":
        stacked = stacked.cuda()
    dist.all_reduce(stacked)
    return tuple(float(v) for v in stacked.cpu())


# ---------------------------------------------------------------------------- --nproc
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: list[str], nproc: int, threads: int | None = None) -> int:
    """`digitlab train ... --nproc N`: starts N ranks of the same command on this machine, with the
    environment torchrun would give them, and waits. If a rank fails the others are stopped (they
    would wait for it forever); stopping this process (Ctrl-C, SIGTERM) stops them all. Each rank
    computes on cores / N threads unless --threads says otherwise. Returns the exit code."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env = {**os.environ, "WORLD_SIZE": str(nproc), "LOCAL_WORLD_SIZE": str(nproc), "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), LAUNCHER_PID: str(os.getpid()),
           "OMP_NUM_THREADS": str(threads or max(1, cores // nproc))}
    ranks: list[subprocess.Popen] = []

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        for rank in range(nproc):
            ranks.append(subprocess.Popen([sys.executable, "-m", "digitlab.cli", *argv],
                                          env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}))
        while True:
            codes = [p.poll() for p in ranks]
            failed = [(rank, code) for rank, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                rank, code = failed[0]
                if code < 0:  # a rank's own error is printed by the rank; a signal is said here
                    print(f"digitlab: error: rank {rank} was stopped by signal {-code}", file=sys.stderr)
                return code if code > 0 else 128 - code
            if all(code == 0 for code in codes):
                return 0
            time.sleep(0.2)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for p in ranks:
            if p.poll() is None:
                p.terminate()
        for p in ranks:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _die_with_launcher() -> None:
    """A rank started by `--nproc` ends when its launcher does, even one killed by SIGKILL (which
    cannot stop its children itself): Linux's parent-death signal."""
    launcher = os.environ.get(LAUNCHER_PID)
    if not launcher or not sys.platform.startswith("linux"):
        return
    import ctypes

    PR_SET_PDEATHSIG = 1
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        return
    if os.getppid() != int(launcher):  # the launcher died before the signal was armed
        raise SystemExit(143)
