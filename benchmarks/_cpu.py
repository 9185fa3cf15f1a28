"""Every benchmark prints where it ran: `print_cpu()` at the top of its output (digitlab.machine)."""

from __future__ import annotations

from digitlab.machine import describe


def print_cpu() -> str:
    line = describe()
    print(line, flush=True)
    return line
