"""The service's settings: every limit has a safe default and a `digitlab serve` flag."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from digitlab.reader.image import Limits

ENV = "DIGITLAB_SERVE_CONFIG"  # how `--workers N` hands the settings to uvicorn's worker processes
SUPERVISOR = "DIGITLAB_SERVE_SUPERVISOR"  # the pid of the process whose workers they are


def default_feedback_db() -> str:
    """$DIGITLAB_FEEDBACK_DB, else $XDG_DATA_HOME/digitlab/feedback.sqlite3 (~/.local/share/...)."""
    if os.environ.get("DIGITLAB_FEEDBACK_DB"):
        return os.environ["DIGITLAB_FEEDBACK_DB"]
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return str(base / "digitlab" / "feedback.sqlite3")


@dataclass(frozen=True)
class ServeConfig:
    model: str | None = None  # an ONNX file; None serves the bundled model
    models: str | None = None  # a folder of more exported models, chosen per request with ?model=NAME
    models_cache: int = 8  # of those, at most this many loaded at once (least recently used dropped)
    max_body_bytes: int = 10 * 1024 * 1024  # whole request body, checked while it streams in; also the
    # image file's limit (an image cannot be larger than the body that carries it)
    max_pixels: int = 40_000_000  # width x height from the image header, checked before decoding
    max_batch: int = 64  # images in one POST /v1/predict/batch
    max_concurrent: int = max(1, os.cpu_count() or 1)  # requests read at once per worker (a thread pool)
    max_waiting: int = 256  # inferences queued behind those; beyond this the answer is 503 busy
    request_timeout: float = 10.0  # seconds from the request line to the answer (slow bodies get 408)
    header_timeout: float = 5.0  # seconds to send the request headers (slowloris clients are cut off)
    feedback_db: str = dataclasses.field(default_factory=default_feedback_db)
    watch: bool = False  # reload the model when its file changes, find new and replaced models in
    # the models folder (each worker checks once a second)
    reload_token: str | None = None  # POST /v1/model/reload needs "Authorization: Bearer <token>";
    # without a token only loopback clients may reload
    batch_wait_ms: float = 1.5  # how long the first request at the network waits for others (micro-batching)
    feedback_token: str | None = None  # POST /v1/feedback needs "Authorization: Bearer <token>" when set
    feedback_per_minute: int = 20  # corrections per client (address) and minute, per worker process
    feedback_max_mb: float = 100.0  # the corrections database's size limit; beyond it 507

    @functools.cached_property  # a frozen dataclass: computed once, on first use
    def limits(self) -> Limits:
        """The image limits, as the reader checks them (its one header check, with the service's values)."""
        return Limits(max_bytes=self.max_body_bytes, max_pixels=self.max_pixels)

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        return cls(**json.loads(os.environ[ENV])) if os.environ.get(ENV) else cls()
