"""The service: a FastAPI app on uvicorn (the `serve` extra) with the drawing pad at `/`.

    POST /v1/predict        one digit   -> {label, confidence, probabilities, box, status, model[, hint]}
    POST /v1/read           a number    -> {text, digits: [{label, confidence, box}], model}
    POST /v1/predict/batch  several "image" fields -> {results: [...], model}
    POST /v1/feedback       a correction (image + right label) -> its 28x28 and a small crop, in SQLite
    GET  /v1/model, /v1/models, POST /v1/model/reload, GET /healthz, /readyz, /metrics, /docs, /openapi.json

With --models DIR, every exported model in DIR answers too: `?model=NAME` on the reading routes
(`serve.models`: loaded lazily, a bounded cache, --watch finds new and replaced files).

Images come as a multipart field `image`, raw bytes with an image content type, or JSON
{"image": base64 or data URL} / {"pixels": 28x28}. Every refusal is a 4xx {"error", "detail"}.
Torch-free, like the reader it serves.
"""

from __future__ import annotations

import os
import socket

from digitlab.serve.config import ENV, SUPERVISOR, ServeConfig

__all__ = ["ServeConfig", "create_app", "run"]


def create_app(cfg: ServeConfig | None = None):
    from digitlab.serve.app import create_app as _create_app

    return _create_app(cfg)


def uvicorn_options(cfg: ServeConfig) -> dict:
    from digitlab.serve.protocol import HeaderTimeoutProtocol

    # Connections beyond limit_concurrency get 503 at once instead of queueing without bound.
    return {"http": HeaderTimeoutProtocol, "timeout_keep_alive": 5, "access_log": False,
            "limit_concurrency": max(64, 4 * (cfg.max_concurrent + cfg.max_waiting)),
            "timeout_graceful_shutdown": int(cfg.request_timeout) + 1}


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run(cfg: ServeConfig, host: str = "127.0.0.1", port: int = 8000, workers: int | None = None,
        announce=print, log_level: str = "warning") -> None:
    """Serves until interrupted, on `workers` processes (default: one per usable core). The model is
    checked here first (a bad --model is a one-line error, not a crashed worker), then loaded once per
    worker process."""
    workers = workers or usable_cpus()
    import uvicorn

    from digitlab.serve.app import load_model
    from digitlab.serve.models import ModelFolder

    load_model(cfg.model)
    # the folder is checked here too; its models load in each worker on their first request
    folder = ModelFolder(cfg.models, cfg.models_cache) if cfg.models else None
    os.environ[ENV] = cfg.to_env()  # uvicorn's worker processes (and the protocol) read it
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    options = uvicorn_options(cfg) | {"log_level": log_level}
    announce(f"digitlab: serving the drawing pad on http://{host}:{port}/ and the API on /v1/predict, "
             f"/v1/read (docs: /docs), {workers} worker{'s' if workers > 1 else ''}")
    if folder is not None:
        names = folder.names()
        listed = ", ".join(names[:10]) + (f" and {len(names) - 10} more" if len(names) > 10 else "")
        announce(f"digitlab: and the models in {cfg.models} with ?model=NAME: {listed or 'none yet'}")
    if workers > 1:
        os.environ[SUPERVISOR] = str(os.getpid())  # a worker that outlives this process stops (app.die_with_parent)
        sock.close()  # uvicorn binds the port itself and shares it between its worker processes
        uvicorn.run("digitlab.serve.app:app_from_env", factory=True, host=host, port=port, workers=workers, **options)
    else:
        from digitlab.serve.app import create_app as _create_app

        server = uvicorn.Server(uvicorn.Config(_create_app(cfg), host=host, port=port, **options))
        server.run(sockets=[sock])
