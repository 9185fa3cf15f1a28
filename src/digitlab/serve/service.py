"""What one worker process holds: the settings, the model (with its micro-batcher), the folder of other
people's models (`serve.models`, with --models), the thread pool that reads images off the event loop,
the corrections database and the per-client rate limit.

One `Service` per app (`app.state.service`), reached by the routes through dependencies
(`serve.api.deps`): nothing here is module-level state.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from digitlab import reader
from digitlab.serve import feedback
from digitlab.serve.config import ServeConfig
from digitlab.serve.errors import ApiError
from digitlab.serve.metrics import Metrics
from digitlab.serve.models import Loaded, ModelFolder, load_model

__all__ = ["Loaded", "RateLimit", "Service", "load_model"]

log = logging.getLogger("digitlab.serve")


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
        # the folder's models never take the default model's name: ?model=<that name> is always the default
        default = Path(cfg.model).stem if cfg.model else Path(reader.BUNDLED).stem
        self.models = ModelFolder(cfg.models, cfg.models_cache, cfg.batch_wait_ms / 1000,
                                  reserved=(default, "default")) if cfg.models else None
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

    async def named(self, name: str | None) -> Loaded:
        """The model a request asked for with ?model=NAME (None, "default" or the default's own name: the
        default model). A folder model not in the cache is loaded in a thread, never on the event loop."""
        default = self.current()
        if name is None or name == "default" or name == default.name.partition("@")[0]:
            return default
        if self.models is None:
            raise ApiError(404, "unknown_model", f"no model named {name!r}: this service serves one model, "
                           f"{default.name.partition('@')[0]!r} (start it with --models DIR to serve more)")
        return self.models.cached(name) or await asyncio.get_running_loop().run_in_executor(
            None, self.models.get, name)

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
        """The file watch, once a second: reload the model when its file's mtime or size changes; find new,
        removed and replaced files in the models folder."""
        while True:
            await asyncio.sleep(1.0)
            if self.models is not None:
                await self.rescan()
            if self.loaded is None:
                continue
            try:
                stat = self.loaded.path.stat()
                if (stat.st_mtime_ns, stat.st_size) != self.loaded.stamp:
                    await self.reload()
            except Exception as e:  # noqa: BLE001 - a half-copied file: keep serving the old model, retry later
                log.warning("model reload failed, still serving %s: %s", self.loaded.name, e)

    async def rescan(self) -> None:
        """The models folder read again, and its replaced models that are loaded loaded again (in a thread)."""
        loop = asyncio.get_running_loop()
        try:
            stale = await loop.run_in_executor(None, self.models.scan)
            for name in stale:
                await loop.run_in_executor(None, self.models.reload, name)
        except OSError as e:  # the folder itself gone or unreadable for a moment: try again next time
            log.warning("models folder %s: %s", self.models.folder, e)

    def db(self):
        """This pool thread's connection to the corrections database (sqlite3 connections are per thread)."""
        if getattr(self.local, "db", None) is None:
            self.local.db = feedback.connect(self.cfg.feedback_db)
        return self.local.db
