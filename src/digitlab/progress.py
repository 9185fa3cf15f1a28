"""Progress on stderr for work that can take more than a couple of seconds.

    bar = Progress("LR finder", total=100)
    for i in range(100):
        ...
        bar.update(i + 1, f"loss {loss:.3f}")
    bar.close()

Nothing is shown for work that finishes within `delay` seconds, so quick calls (tests, small sets)
stay quiet. On a terminal the line is redrawn in place; in a log (not a tty) a new line is written
at most every 10 seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

DELAY = 1.0  # seconds of silence before the first line (tests set 0 to see every line)


class Progress:
    def __init__(self, label: str, total: int | None = None, stream: TextIO | None = None,
                 delay: float | None = None, enabled: bool = True) -> None:
        self.label, self.total, self.enabled = label, total, enabled
        self.delay = DELAY if delay is None else delay
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = self.last = time.perf_counter()
        self.shown = False
        self.done = 0
        self.note = ""

    def update(self, done: int, note: str = "") -> None:
        self.done, self.note = done, note
        now = time.perf_counter()
        if not self.enabled or now - self.start < self.delay:
            return
        if now - self.last < (0.2 if self.tty else 10.0) and self.shown:
            return
        self.last = now
        self._write(now)

    def _write(self, now: float) -> None:
        of = f"/{self.total}" if self.total else ""
        percent = f" {100 * self.done / self.total:3.0f}%" if self.total else ""
        text = f"{self.label}: {self.done}{of}{percent} {self.note} ({now - self.start:.0f}s)".rstrip()
        self.stream.write(("\r" + text + "\033[K") if self.tty else text + "\n")
        self.stream.flush()
        self.shown = True

    def close(self, note: str | None = None, done: int | None = None) -> None:
        """Ends the line; the final state is written if anything was shown (or it took long)."""
        if note is not None:
            self.note = note
        if done is not None:
            self.done = done
        now = time.perf_counter()
        if self.enabled and (self.shown or now - self.start >= self.delay):
            self._write(now)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
