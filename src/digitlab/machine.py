"""Which CPU this is, in the words benchmark figures need: model name and the flags that change speed.

Torch-free (reads /proc/cpuinfo, falls back to `platform`), so benchmarks and the torch-free reader
can both say where they ran. Speed on this project depends mostly on four flags: AVX-512 (wide
vectors), AVX-512 BF16 and AMX (native bfloat16 training), and VNNI (fast int8 inference).

    python -m digitlab.machine    # prints e.g. "Intel(R) Xeon(R) Processor, 2 CPUs: avx2 avx512f ..."
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

# The flags worth naming beside a figure, in /proc/cpuinfo's spelling.
RELEVANT_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    model, flags = platform.processor() or platform.machine(), frozenset()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and value.strip():
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:  # x86 / ARM spelling
                    flags = frozenset(value.split())
                if key == "" and flags:  # the first processor's block is enough
                    break
    except OSError:  # not Linux: name only
        pass
    return model, flags


def cpu_model() -> str:
    return _cpuinfo()[0]


def cpu_flags() -> frozenset[str]:
    return _cpuinfo()[1]


def describe() -> str:
    """One line: CPU model, logical CPU count, and which of the relevant flags it has."""
    flags = cpu_flags()
    have = [f for f in RELEVANT_FLAGS if f in flags]
    missing = [f for f in RELEVANT_FLAGS if f not in flags]
    forced = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if os.environ.get(k)}
    line = (f"CPU: {cpu_model()}, {os.cpu_count()} logical CPUs; has {' '.join(have) or 'none of'}"
            + (f"; lacks {' '.join(missing)}" if missing else ""))
    if forced:  # an emulated slower CPU: say so beside every figure
        line += "; forced " + " ".join(f"{k}={v}" for k, v in forced.items())
    return line


# Environment variables that change which BLAS kernel runs, or how many threads compute: a figure
# measured under them is not the same figure (OpenBLAS picks a slower kernel under OPENBLAS_CORETYPE).
COMPUTE_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def compute_libraries() -> str:
    """One line: the BLAS and OpenMP libraries loaded in this process (as threadpoolctl sees them),
    each with its kernel and thread count, the environment variables that change them, and the load
    average (on a shared 2-core machine a figure means little without it). Call it after the work
    is imported (numpy's BLAS is there from the start; torch's OpenMP only once torch is)."""
    parts = []
    try:
        from threadpoolctl import threadpool_info  # comes with scikit-learn (the train extra)

        for pool in threadpool_info():
            kernel = f" {pool['architecture']}" if pool.get("architecture") else ""
            version = f" {pool['version']}" if pool.get("version") else ""
            parts.append(f"{pool['internal_api']}{version}{kernel} x{pool['num_threads']} "
                         f"({os.path.basename(pool['filepath'])})")
    except ImportError:
        parts.append("threadpoolctl not installed: BLAS kernel and threads unknown")
    env = [f"{k}={os.environ[k]}" for k in COMPUTE_ENV if os.environ.get(k)]
    if env:
        parts.append("set: " + " ".join(env))
    if hasattr(os, "getloadavg"):
        parts.append("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return "; ".join(parts)


if __name__ == "__main__":
    print(describe())
    import numpy  # noqa: F401  (so that its BLAS shows)

    print(compute_libraries())
