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


def cpu_kind() -> str:
    """'avx512' or 'avx2' (or 'other'): the column of BENCHMARKS.md a figure from this CPU belongs to."""
    flags = cpu_flags()
    return "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "other"


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


if __name__ == "__main__":
    print(describe())
