"""Every benchmark prints where it ran: `print_cpu()` at the top of its output (digitlab.machine): the CPU,
the BLAS kernel and thread counts in use, and the load average."""

from __future__ import annotations

from digitlab.machine import compute_libraries, describe


def print_cpu() -> str:
    """The CPU, then the BLAS/OpenMP libraries with their kernels and threads and the load average."""
    line = f"{describe()}\n{compute_libraries()}"
    print(line, flush=True)
    return line
