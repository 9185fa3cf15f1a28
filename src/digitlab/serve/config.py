"""The service's settings: every limit has a safe default and a `digitlab serve` flag."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

ENV = "DIGITLAB_SERVE_CONFIG"  # how `--workers N` hands the settings to uvicorn's worker processes


def default_feedback_db() -> str:
    """$DIGITLAB_FEEDBACK_DB, else $XDG_DATA_HOME/digitlab/feedback.sqlite3 (~/.local/share/...)."""
    if os.environ.get("DIGITLAB_FEEDBACK_DB"):
        return os.environ["DIGITLAB_FEEDBACK_DB"]
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return str(base / "digitlab" / "feedback.sqlite3")


@dataclass(frozen=True)
class ServeConfig:
    model: str | None = None  # an ONNX file; None serves the bundled model
    max_body_bytes: int = 10 * 1024 * 1024  # whole request body, checked while it streams in
    max_pixels: int = 40_000_000  # width x height from the image header, checked before decoding
    max_batch: int = 64  # images in one POST /v1/predict/batch
    max_concurrent: int = max(1, os.cpu_count() or 1)  # inferences running at once (a thread pool)
    max_waiting: int = 256  # inferences queued behind those; beyond this the answer is 503 busy
    request_timeout: float = 10.0  # seconds from the request line to the answer (slow bodies get 408)
    header_timeout: float = 5.0  # seconds to send the request headers (slowloris clients are cut off)
    feedback_db: str = dataclasses.field(default_factory=default_feedback_db)
    watch: bool = False  # reload the model when its file changes (each worker checks once a second)
    reload_token: str | None = None  # POST /v1/model/reload needs "Authorization: Bearer <token>";
    # without a token only loopback clients may reload

    def to_env(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_env(cls) -> ServeConfig:
        return cls(**json.loads(os.environ[ENV])) if os.environ.get(ENV) else cls()
