"""The FastAPI app: the reader behind a REST API, the drawing pad, and corrections in SQLite.

Design, in the order a request meets it:
- `Guard` (pure ASGI, outermost) enforces the body-size limit while the body streams in, the request
  timeout, the JSON 500 for anything unexpected, and records metrics.
- The routes parse the upload (multipart, raw image bytes, or JSON), check the image's header
  (size and pixel count, before anything is decoded), and hand the work to a bounded thread pool, so
  the event loop never decodes or infers and at most `max_concurrent` inferences run at once.
- Each request takes the current model once, at its start: a reload swaps the reference, so requests
  in flight finish on the model they started with and nothing is dropped.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import io
import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from digitlab import reader
from digitlab.errors import ImageError
from digitlab.serve import feedback
from digitlab.serve.config import ServeConfig
from digitlab.serve.metrics import Metrics
from digitlab.serve.schemas import (
    BatchPrediction,
    ErrorBody,
    FeedbackJSON,
    FeedbackStored,
    Health,
    ImageJSON,
    ModelCard,
    Prediction,
    Reading,
)

log = logging.getLogger("digitlab.serve")
STATIC = resources.files("digitlab.serve").joinpath("static")
RAW_TYPES = "image/* or application/octet-stream"


class ApiError(Exception):
    """A request the service refuses: the status code and the {"error", "detail"} body."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail = status, error, detail


def error_response(status: int, error: str, detail: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


# ---------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class Loaded:
    model: object
    name: str  # "<file stem>@<sha256 prefix>": says exactly which file answered
    path: Path
    sha256: str
    loaded_at: float
    stamp: tuple[int, int]  # (mtime_ns, size) of the file, for the file watch


def load_model(path: str | os.PathLike | None) -> Loaded:
    """Loads an ONNX model (None: the bundled one) with its card. Raises digitlab's ModelError."""
    p = Path(path) if path else Path(reader.BUNDLED)
    model = reader.OnnxModel(p)  # a fresh instance: a reload must not reuse a cached one
    stat = p.stat()
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return Loaded(model, f"{p.stem}@{digest[:12]}", p, digest, time.time(), (stat.st_mtime_ns, stat.st_size))


# ---------------------------------------------------------------------------- images in
def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def check_image(data: bytes, cfg: ServeConfig) -> tuple[int, int]:
    """(width, height) from the image's header, before any pixel is decoded; ApiError when the bytes
    are empty, not an image, or would decode to more than `max_pixels` pixels (a decompression bomb)."""
    if not data:
        raise ApiError(400, "empty_body", "the image is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError as e:
        raise ApiError(413, "too_large", f"image too large: {e}") from None
    except UnidentifiedImageError:
        raise ApiError(400, "not_an_image", "not an image Pillow can read (PNG, JPEG, GIF, WebP, BMP, TIFF...)") \
            from None
    except Exception as e:  # noqa: BLE001 - a hostile header can raise anything from a plugin: all mean "corrupt"
        raise ApiError(400, "corrupt_image", f"corrupt image header ({type(e).__name__}: {e})") from None
    if width < 1 or height < 1:
        raise ApiError(400, "corrupt_image", f"image header says {width}x{height} pixels")
    if width * height > cfg.max_pixels:
        raise ApiError(413, "too_large", f"{width}x{height} = {width * height:,} pixels exceeds the "
                                         f"{cfg.max_pixels:,}-pixel limit")
    return width, height


def decode_base64(text: str) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid_base64", '"image" is not valid base64 (or a data: URL holding base64)') from None


def parse_json(body: bytes, schema: type[ImageJSON]) -> ImageJSON:
    if not body:
        raise ApiError(400, "empty_body", "the body is empty: send JSON {\"image\": ...} or {\"pixels\": ...}")
    try:
        obj = json.loads(body)
    except ValueError as e:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON ({e})") from None
    try:
        return schema.model_validate(obj)
    except ValidationError as e:
        raise ApiError(422, "invalid_request", validation_detail(e.errors())) from None


def validation_detail(errors) -> str:
    parts = []
    for err in list(errors)[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def json_source(payload: ImageJSON) -> bytes | np.ndarray:
    return decode_base64(payload.image) if payload.image is not None else np.array(payload.pixels, np.uint8)


async def read_form(request: Request, cfg: ServeConfig):
    try:
        # one file more than allowed, so a batch one too large is told so (413), not refused as malformed
        return await request.form(max_files=cfg.max_batch + 1, max_fields=32, max_part_size=64 * 1024)
    except StarletteHTTPException as e:
        if "Too many files" in str(e.detail):
            raise ApiError(413, "batch_too_large", f"at most {cfg.max_batch} images per request") from None
        raise ApiError(400, "invalid_multipart", f"malformed multipart form ({e.detail})") from None


async def form_images(form) -> list[bytes]:
    fields = form.getlist("image")
    if not fields:
        raise ApiError(400, "missing_image", 'the form has no "image" file field')
    images = []
    for field in fields:
        if not isinstance(field, UploadFile):
            raise ApiError(400, "missing_image", 'the "image" field must be a file upload, not text')
        images.append(await field.read())
    return images


async def request_images(request: Request, cfg: ServeConfig) -> tuple[list[bytes | np.ndarray], float | None]:
    """The image(s) of a request, whichever way they were sent, and a min_confidence given in JSON."""
    media = media_type(request)
    if media == "multipart/form-data":
        return await form_images(await read_form(request, cfg)), None
    if media.startswith("image/") or media == "application/octet-stream":
        body = await request.body()
        if not body:
            raise ApiError(400, "empty_body", "the body is empty: send the image file's bytes")
        return [body], None
    if media == "application/json":
        payload = parse_json(await request.body(), ImageJSON)
        return [json_source(payload)], payload.min_confidence
    raise ApiError(415, "unsupported_media_type",
                   f"Content-Type {media or '(none)'!r} not accepted: send multipart/form-data with an "
                   f'"image" file, the image bytes as {RAW_TYPES}, or application/json')


# ---------------------------------------------------------------------------- the work (pool threads)
def image_size(source: bytes | np.ndarray, cfg: ServeConfig) -> tuple[int, int]:
    return check_image(source, cfg) if isinstance(source, bytes) else (source.shape[1], source.shape[0])


def png_data_url(x28: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(x28, np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def reader_error(e: ImageError) -> ApiError:
    return ApiError(400, "not_an_image", str(e))


def predict_one(loaded: Loaded, source, cfg: ServeConfig, min_confidence: float, include_image: bool) -> dict:
    image_size(source, cfg)
    try:
        result = reader.classify(source, model=loaded.model, min_confidence=min_confidence)
    except ImageError as e:
        raise reader_error(e) from None
    out = {**reader.as_dict(result), "model": loaded.name}  # the CLI's --json answer: same fields, same rounding
    if include_image and result.get("image") is not None:
        out["image"] = png_data_url(result["image"])
    return out


def read_one(loaded: Loaded, source, cfg: ServeConfig, min_confidence: float) -> dict:
    image_size(source, cfg)  # refuses an oversized image from its header, before decoding
    try:
        reading = reader.read(source, model=loaded.model, min_confidence=min_confidence)
    except ImageError as e:
        raise reader_error(e) from None
    digits = [d.as_dict() for d in reading.digits]  # boxes: the reader's, already in the upload's pixels
    return {"text": reading.text, "digits": digits, "model": loaded.name}


def verified_image(source, cfg: ServeConfig) -> tuple[bytes, str]:
    """(bytes to store, media type) of a correction: the upload itself once it fully decodes, or a PNG
    of a 28x28 pixel array."""
    if isinstance(source, np.ndarray):
        buf = io.BytesIO()
        Image.fromarray(source).save(buf, format="PNG")
        return buf.getvalue(), "image/png"
    check_image(source, cfg)
    try:
        with Image.open(io.BytesIO(source)) as image:
            kind = Image.MIME.get(image.format or "", "application/octet-stream")
            image.load()
    except Exception as e:  # noqa: BLE001 - same reasoning as check_image: any decoder failure is a bad upload
        raise ApiError(400, "corrupt_image", f"the image does not decode ({type(e).__name__}: {e})") from None
    return source, kind


# ---------------------------------------------------------------------------- per-app state
class Service:
    """What one worker process holds: settings, the model, the inference pool, the feedback database."""

    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.loaded: Loaded | None = None
        self.load_error: str | None = None
        self.pool: ThreadPoolExecutor | None = None
        self.pending = 0  # inferences submitted and not finished (event-loop thread only)
        self.local = threading.local()  # one SQLite connection per pool thread
        self.metrics = Metrics(set())
        self.reload_lock = asyncio.Lock()

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
            loaded = await asyncio.get_running_loop().run_in_executor(None, load_model, path)
            self.loaded, self.load_error = loaded, None
            log.info("model loaded: %s (%s)", loaded.name, loaded.path)
            return loaded

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
        if getattr(self.local, "db", None) is None:
            self.local.db = feedback.connect(self.cfg.feedback_db)
        return self.local.db


# ---------------------------------------------------------------------------- Guard (pure ASGI)
class Guard:
    """Body-size limit while streaming, request timeout, JSON 500 on anything unexpected, metrics."""

    def __init__(self, app, service: Service) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cfg, metrics = self.service.cfg, self.service.metrics
        start, endpoint, method = time.perf_counter(), metrics.endpoint(scope["path"]), scope["method"]
        state = {"status": 500, "started": False, "error": None, "body_done": method in ("GET", "HEAD")}
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cfg.max_body_bytes:
                    raise ApiError(413, "too_large", f"the body exceeds the {cfg.max_body_bytes:,}-byte limit")
                if not message.get("more_body", False):
                    state["body_done"] = True
            return message

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                if message["status"] >= 400:
                    state["error"] = dict(message.get("headers", [])).get(b"x-error", b"").decode() or state["error"]
            await send(message)

        async def refuse(status: int, error: str, detail: str) -> None:
            state["error"] = error
            if not state["started"]:
                await error_response(status, error, detail)(scope, receive, tracking_send)

        metrics.in_flight += 1
        try:
            length = dict(scope["headers"]).get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > cfg.max_body_bytes):
                bad = not length.isdigit()
                return await refuse(400 if bad else 413, "bad_content_length" if bad else "too_large",
                                    "Content-Length is not a number" if bad else
                                    f"the body ({int(length):,} bytes) exceeds the {cfg.max_body_bytes:,}-byte limit")
            async with asyncio.timeout(cfg.request_timeout):
                await self.app(scope, limited_receive, tracking_send)
        except TimeoutError:
            if state["body_done"]:
                await refuse(503, "timeout", f"no answer within {cfg.request_timeout:g} s: the server is busy")
            else:
                await refuse(408, "timeout", f"the request body did not arrive within {cfg.request_timeout:g} s")
        except Exception:  # the catch-all: log it, answer JSON 500, never drop the connection silently
            log.exception("unexpected error in %s %s", method, scope["path"])
            await refuse(500, "internal", "unexpected server error (logged)")
        finally:
            metrics.in_flight -= 1
            metrics.observe(endpoint, method, state["status"], time.perf_counter() - start, state["error"])


# ---------------------------------------------------------------------------- the app
ERRORS = {code: {"model": ErrorBody} for code in (400, 408, 413, 415, 422, 500, 503)}


def image_body(*, batch: bool = False) -> dict:
    """The OpenAPI request body of the image endpoints (parsed by hand: three content types)."""
    files = {"type": "array", "items": {"type": "string", "format": "binary"}} if batch else \
        {"type": "string", "format": "binary"}
    content = {"multipart/form-data": {"schema": {"type": "object", "required": ["image"],
                                                  "properties": {"image": files}}}}
    if not batch:
        content["image/*"] = {"schema": {"type": "string", "format": "binary"}}
        content["application/json"] = {"schema": ImageJSON.model_json_schema()}
    return {"requestBody": {"required": True, "content": content}}


def feedback_body() -> dict:
    form = {"type": "object", "required": ["image", "label"], "properties": {
        "image": {"type": "string", "format": "binary"}, "label": {"type": "integer", "minimum": 0, "maximum": 9},
        "predicted": {"type": "integer", "minimum": 0, "maximum": 9}, "user": {"type": "string"}}}
    content = {"multipart/form-data": {"schema": form},
               "application/json": {"schema": FeedbackJSON.model_json_schema()}}
    return {"requestBody": {"required": True, "content": content}}


def create_app(cfg: ServeConfig | None = None) -> FastAPI:
    cfg = cfg or ServeConfig()
    service = Service(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.pool = ThreadPoolExecutor(cfg.max_concurrent, thread_name_prefix="digitlab-infer")
        service.reload_lock = asyncio.Lock()

        async def first_load() -> None:
            try:
                await service.reload()
            except Exception as e:  # noqa: BLE001 - reported by /readyz and each request's 503
                service.load_error = str(e)
                log.error("model failed to load: %s", e)

        tasks = [asyncio.create_task(first_load())] + ([asyncio.create_task(service.watch())] if cfg.watch else [])
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            service.pool.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(title="digitlab", version="1", lifespan=lifespan,
                  description="Handwritten digits in, digits out. The drawing pad is at /.")
    app.state.service = service

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError):
        return error_response(e.status, e.error, e.detail, {"x-error": e.error})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError):
        return error_response(422, "invalid_request", validation_detail(e.errors()), {"x-error": "invalid_request"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        error = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        detail = {404: f"no such endpoint: {request.url.path}",
                  405: f"{request.method} is not allowed on {request.url.path}"}.get(e.status_code, str(e.detail))
        return error_response(e.status_code, error, detail, {"x-error": error, **(e.headers or {})})

    page = STATIC.joinpath("index.html").read_text(encoding="utf-8")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def pad() -> HTMLResponse:
        return HTMLResponse(page)

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.post("/v1/predict", response_model=Prediction, responses=ERRORS, openapi_extra=image_body(),
              response_model_exclude_unset=True,
              summary="One digit: label, calibrated confidence, probabilities, box")
    async def predict(request: Request, min_confidence: float = Query(0.0, ge=0.0, le=1.0),
                      include_image: bool = Query(False, description="add the 28x28 the model saw")) -> dict:
        loaded = service.current()
        (source, *_), json_min = await request_images(request, cfg)
        mc = json_min if json_min is not None else min_confidence
        return await service.run(predict_one, loaded, source, cfg, mc, include_image)

    @app.post("/v1/read", response_model=Reading, responses=ERRORS, openapi_extra=image_body(),
              summary="A number: its text and a box per digit, in the uploaded image's pixels")
    async def read(request: Request, min_confidence: float = Query(0.0, ge=0.0, le=1.0)) -> dict:
        loaded = service.current()
        (source, *_), json_min = await request_images(request, cfg)
        return await service.run(read_one, loaded, source, cfg, json_min if json_min is not None else min_confidence)

    @app.post("/v1/predict/batch", response_model=BatchPrediction, responses=ERRORS,
              openapi_extra=image_body(batch=True), summary="Up to max_batch images, one multipart field each")
    async def predict_batch(request: Request, min_confidence: float = Query(0.0, ge=0.0, le=1.0)) -> dict:
        loaded = service.current()
        if media_type(request) != "multipart/form-data":
            raise ApiError(415, "unsupported_media_type", 'send multipart/form-data with one "image" field per image')
        images = await form_images(await read_form(request, cfg))
        if len(images) > cfg.max_batch:
            raise ApiError(413, "batch_too_large", f"{len(images)} images: at most {cfg.max_batch} per request")

        def one(i: int, data: bytes) -> dict:
            try:
                return predict_one(loaded, data, cfg, min_confidence, False)
            except ApiError as e:
                raise ApiError(e.status, e.error, f"image {i}: {e.detail}") from None

        results = await asyncio.gather(*(service.run(one, i, d) for i, d in enumerate(images)))
        return {"results": results, "model": loaded.name}

    @app.post("/v1/feedback", response_model=FeedbackStored, status_code=201, responses=ERRORS,
              openapi_extra=feedback_body(), summary='A correction ("wrong? it is a 7"), stored for fine-tuning')
    async def post_feedback(request: Request) -> dict:
        media = media_type(request)
        if media == "multipart/form-data":
            form = await read_form(request, cfg)
            (source, *_) = await form_images(form)
            fields = {k: form.get(k) for k in ("label", "predicted", "user") if form.get(k) not in (None, "")}
            try:
                payload = FeedbackJSON.model_validate({"pixels": [[0] * 28] * 28, **fields})
            except ValidationError as e:
                raise ApiError(422, "invalid_request", validation_detail(e.errors())) from None
        elif media == "application/json":
            payload = parse_json(await request.body(), FeedbackJSON)
            source = json_source(payload)
        else:
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data (image, label) or application/json")
        model = service.loaded.name if service.loaded else None

        def store() -> int:
            data, kind = verified_image(source, cfg)
            return feedback.add(service.db(), data, kind, payload.label, payload.predicted, payload.user, model)

        return {"id": await service.run(store), "label": payload.label}

    @app.get("/v1/model", response_model=ModelCard, responses=ERRORS, summary="The model card of the served model")
    async def model_card() -> dict:
        loaded = service.current()
        return {"model": loaded.name, "path": str(loaded.path), "sha256": loaded.sha256,
                "loaded_at": loaded.loaded_at, "card": loaded.model.card}

    @app.post("/v1/model/reload", response_model=ModelCard, responses=ERRORS,
              summary="Load the model file again (replace it first); requests in flight finish on the old one")
    async def reload_model(request: Request) -> dict:
        token = cfg.reload_token
        if token:
            if request.headers.get("authorization", "") != f"Bearer {token}":
                raise ApiError(403, "forbidden", "reloading needs Authorization: Bearer <the --reload-token>")
        elif (request.client.host if request.client else "") not in ("127.0.0.1", "::1"):
            raise ApiError(403, "forbidden", "without --reload-token only loopback clients may reload the model")
        try:
            await service.reload()
        except Exception as e:  # noqa: BLE001 - a bad new file: say why, keep serving the old model
            raise ApiError(500, "reload_failed", f"{e}; still serving the previous model") from None
        return await model_card()

    @app.get("/healthz", response_model=Health, summary="Liveness")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", response_model=Health, responses=ERRORS,
                   summary="Ready once the model is loaded")
    async def readyz() -> dict:
        service.current()
        return {"status": "ready"}

    @app.get("/metrics", response_class=PlainTextResponse, summary="Prometheus text exposition")
    async def metrics() -> PlainTextResponse:
        extra = {"digitlab_inferences_pending": service.pending,
                 "digitlab_model_loaded": int(service.loaded is not None)}
        return PlainTextResponse(service.metrics.render(extra), media_type="text/plain; version=0.0.4")

    # The stdlib server's routes, for one release (see README): same handlers, same answers.
    app.add_api_route("/api/predict", predict, methods=["POST"], include_in_schema=False)
    app.add_api_route("/api/read", read, methods=["POST"], include_in_schema=False)
    app.add_api_route("/api/health", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False)

    service.metrics.endpoints = {r.path for r in app.routes if hasattr(r, "methods")}
    app.add_middleware(Guard, service=service)
    return app


def app_from_env() -> FastAPI:
    """The factory uvicorn's worker processes call (`--workers N`): settings come through the environment."""
    return create_app(ServeConfig.from_env())
