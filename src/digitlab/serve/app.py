"""The FastAPI app: the reader behind a REST API, the drawing pad, and corrections in SQLite.

Design, in the order a request meets it:
- `Guard` (pure ASGI, outermost, `serve.guard`) enforces the body-size limit while the body streams
  in, the request timeout, the JSON 500 for anything unexpected, and records metrics.
- The routers (`serve.api`: reading, feedback, model, ops) take what they need through dependencies:
  the worker's `Service`, its settings, the current model, the parsed body.
- The work (`serve.work`) runs in a bounded thread pool, so the event loop never decodes or infers:
  each image is checked and decoded once, with the service's limits, and the network reads the images
  of requests that arrive together in one call (`serve.batching`).
- Each request takes the current model once, at its start: a reload swaps the reference, so requests
  in flight finish on the model they started with and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import warnings
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

from fastapi import FastAPI
from PIL import Image

from digitlab.serve import errors
from digitlab.serve.api import feedback, model, ops, reading
from digitlab.serve.config import SUPERVISOR, ServeConfig
from digitlab.serve.guard import Guard
from digitlab.serve.service import Loaded, Service, load_model

__all__ = ["Loaded", "Service", "app_from_env", "create_app", "load_model"]


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    service: Service = app.state.service
    service.pool = ThreadPoolExecutor(service.cfg.max_concurrent, thread_name_prefix="digitlab-infer")
    service.reload_lock = asyncio.Lock()  # bound to this event loop
    tasks = [asyncio.create_task(service.first_load())]
    if service.cfg.watch:
        tasks.append(asyncio.create_task(service.watch()))
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        service.pool.shutdown(wait=True, cancel_futures=True)


def create_app(cfg: ServeConfig | None = None) -> FastAPI:
    # The service's own pixel limit (40 M by default) is checked from the header, before decoding and
    # below Pillow's bomb threshold (89 M): Pillow's warning for 89-179 M pixel headers of formats other
    # than PNG (whose size the reader reads itself) would only fill the log for an image refused anyway.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    service = Service(cfg or ServeConfig())
    app = FastAPI(title="digitlab", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Handwritten digits in, digits out. The drawing pad is at /.")
    app.state.service = service
    errors.install(app)
    routers = (reading.router, feedback.router, model.router, ops.router)
    for router in routers:
        app.include_router(router)
    ops.mount_files(app)
    # metrics are labelled by these paths only (anything else is "other"): a bounded label set
    service.metrics.endpoints = {r.path for router in routers for r in router.routes} | {app.openapi_url}
    app.add_middleware(Guard, service=service)
    return app


def app_from_env() -> FastAPI:
    """The factory uvicorn's worker processes call (`--workers N`): settings come through the environment."""
    die_with_parent()
    return create_app(ServeConfig.from_env())


def die_with_parent() -> None:
    """A worker process ends when uvicorn's supervisor does, even when it is killed (kill -9 leaves it no
    time to stop its workers): orphaned workers would keep answering on the port with stale settings."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    supervisor = os.environ.get(SUPERVISOR)
    if supervisor and os.getppid() != int(supervisor):  # it died before the line above: nobody would stop us
        raise SystemExit(f"digitlab: the server process {supervisor} is gone; worker {os.getpid()} stops")
