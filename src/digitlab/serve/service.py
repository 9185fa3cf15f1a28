"""What one worker process holds: the settings, the model (with its micro-batcher), the thread pool
that reads images off the event loop, the corrections database and the per-client rate limit.

One `Service` per app (`app.state.service`), reached by the routes through dependencies
(`serve.api.deps`): nothing here is module-level state.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from digitlab import reader
from digitlab.serve import feedback
from digitlab.serve.batching import MicroBatcher
from digitlab.serve.config import ServeConfig
from digitlab.serve.errors import ApiError
from digitlab.serve.metrics import Metrics

log = logging.getLogger("digitlab.serve")


@dataclass(frozen=True)
class Loaded:
    model: object
    name: str  # "<file stem>@<sha256 prefix>": says exactly which file answered
    path: Path
    sha256: str
    loaded_at: float
    stamp: tuple[int, int]  # (mtime_ns, size) of the file, for the file watch
    batch_wait: float = 0.0015  # seconds the first request at the network waits for others
    batcher: MicroBatcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # one batcher per loaded model: after a reload, requests in flight finish in the old one's batches
        object.__setattr__(self, "batcher", MicroBatcher(self.model, self.batch_wait))


def load_model(path: str | os.PathLike | None, batch_wait: float = 0.0015) -> Loaded:
    """Loads an ONNX model (None: the bundled one) with its card. Raises digitlab's ModelError."""
    p = Path(path) if path else Path(reader.BUNDLED)
    model = reader.OnnxModel(p)  # a fresh instance: a reload must not reuse a cached one
    stat = p.stat()
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return Loaded(model, f"{p.stem}@{digest[:12]}", p, digest, time.time(), (stat.st_mtime_ns, stat.st_size),
                  batch_wait)


class RateLimit:
    """A token bucket per client address: `per_minute` requests a minute, in bursts of up to as many.
    Used from the event loop's thread only (no lock). At most `clients` addresses are remembered, the
    least recently seen forgotten first, so a flood of addresses cannot grow it without bound."""

    def __init__(self, per_minute: int, clients: int = 10_000) -> None:
        self.rate, self.burst, self.clients = per_minute / 60.0, float(per_minute), clients
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, when)

    def take(self, client: str) -> float:
        """0 when allowed (a token is taken); else the seconds until the next token."""
        now = time.monotonic()
        tokens, when = self.buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self.buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
        if len(self.buckets) > self.clients:
            self.buckets.popitem(last=False)
        return wait


class Service:
    """Per worker process: settings, the model, the inference pool, the feedback database."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.loaded: Loaded | None = None
        self.load_error: str | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.pending = 0  # pool tasks submitted and not finished (event-loop thread only)
        self.local = threading.local()  # one SQLite connection per pool thread
        self.metrics = Metrics(set())
        self.reload_lock = asyncio.Lock()
        self.feedback_rate = RateLimit(cfg.feedback_per_minute)

    def current(self) -> Loaded:
        if self.loaded is None:
            detail = f"model failed to load: {self.load_error}" if self.load_error else "the model is loading"
            raise ApiError(503, "not_ready", detail)
        return self.loaded

    async def run(self, fn, *args):
        """fn(*args) in the bounded pool. Waiting requests beyond `max_waiting` get 503 at once; a
        request whose timeout fires while queued is dropped from the queue (the future is cancelled)."""
        if self.pending >= self.cfg.max_concurrent + self.cfg.max_waiting:
            raise ApiError(503, "busy", "too many requests waiting: try again shortly")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)
        finally:
            self.pending -= 1

    async def reload(self) -> Loaded:
        async with self.reload_lock:  # one reload at a time; requests keep using the old model meanwhile
            path = self.loaded.path if self.loaded else self.cfg.model
            loaded = await asyncio.get_running_loop().run_in_executor(
                None, load_model, path, self.cfg.batch_wait_ms / 1000)
            self.loaded, self.load_error = loaded, None
            log.info("model loaded: %s (%s)", loaded.name, loaded.path)
            return loaded

    async def first_load(self) -> None:
        try:
            await self.reload()
        except Exception as e:  # noqa: BLE001 - reported by /readyz and each request's 503
            self.load_error = str(e)
            log.error("model failed to load: %s", e)

    async def watch(self) -> None:
        """The file watch: reload when the model file's mtime or size changes (checked once a second)."""
        while True:
            await asyncio.sleep(1.0)
            if self.loaded is None:
                continue
            try:
                stat = self.loaded.path.stat()
                if (stat.st_mtime_ns, stat.st_size) != self.loaded.stamp:
                    await self.reload()
            except Exception as e:  # noqa: BLE001 - a half-copied file: keep serving the old model, retry later
                log.warning("model reload failed, still serving %s: %s", self.loaded.name, e)

    def db(self):
        """This pool thread's connection to the corrections database (sqlite3 connections are per thread)."""
        if getattr(self.local, "db", None) is None:
            self.local.db = feedback.connect(self.cfg.feedback_db)
        return self.local.db
