"""The service: a REST API and a drawing pad, on the standard library's threaded HTTP server.

    GET  /                 the drawing pad (static/index.html)
    GET  /api/health       {"status": "ok", "model": ...}
    POST /api/predict      one digit   -> {"label", "status", "confidence", "probabilities"}
    POST /api/read         a number    -> {"text", "digits": [{"label", "confidence", "box"}]}

The body of a POST is the image file itself (any content type), or JSON
{"image": "<base64 or data: URL>", "min_confidence": 0.5}. `?min_confidence=P` works for both.
Every failure is a 4xx with {"error": reason}; the model is loaded once, at start.
"""

from __future__ import annotations

import base64
import binascii
import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from digitlab.errors import DigitlabError

MAX_BODY = 10 * 1024 * 1024


class RequestError(Exception):
    def __init__(self, status: HTTPStatus, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def parse_body(body: bytes, content_type: str, query: dict[str, list[str]]) -> tuple[bytes, float]:
    """(image bytes, min_confidence) from a request, or a RequestError saying what is wrong."""
    options: dict = {k: v[-1] for k, v in query.items()}
    image = body
    if content_type.split(";")[0].strip() == "application/json":
        try:
            payload = json.loads(body)
            data = payload["image"]
        except (ValueError, KeyError, TypeError):
            raise RequestError(HTTPStatus.BAD_REQUEST, 'JSON body must be {"image": "<base64 or data URL>"}') from None
        options.update({k: v for k, v in payload.items() if k != "image"})
        if not isinstance(data, str):
            raise RequestError(HTTPStatus.BAD_REQUEST, '"image" must be a base64 string or a data: URL')
        try:
            image = base64.b64decode(data.split(",", 1)[1] if data.startswith("data:") else data, validate=True)
        except (binascii.Error, IndexError, ValueError):
            raise RequestError(HTTPStatus.BAD_REQUEST, '"image" is not valid base64') from None
    if not image:
        raise RequestError(HTTPStatus.BAD_REQUEST, "empty body: send an image file or JSON with an image")
    try:
        min_confidence = float(options.get("min_confidence", 0.0))
    except (TypeError, ValueError):
        raise RequestError(HTTPStatus.BAD_REQUEST, "min_confidence must be a number between 0 and 1") from None
    if not 0.0 <= min_confidence <= 1.0:
        raise RequestError(HTTPStatus.BAD_REQUEST, "min_confidence must be between 0 and 1")
    return image, min_confidence


def predict_json(image: bytes, min_confidence: float, model) -> dict:
    from digitlab.reader.recognize import classify

    result = classify(image, model=model, min_confidence=min_confidence)
    return {k: result[k] for k in ("label", "status", "confidence", "probabilities")}


def read_json(image: bytes, min_confidence: float, model) -> dict:
    from digitlab.reader.recognize import read

    reading = read(image, model=model, min_confidence=min_confidence)
    return {"text": reading.text, "digits": [d.as_dict() for d in reading.digits]}


ROUTES = {"/api/predict": predict_json, "/api/read": read_json}


class Handler(BaseHTTPRequestHandler):
    server_version = "digitlab"
    model = None  # set by make_server

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's naming
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            page = resources.files(__package__).joinpath("static/index.html").read_bytes()
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        elif path == "/api/health":
            card = getattr(self.model, "card", {}) or {}
            self._json(HTTPStatus.OK, {"status": "ok", "model": card.get("name", "digit-model")})
        elif path in ROUTES:
            self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"use POST for {path}"})
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such endpoint: {path}"})

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        try:
            if url.path not in ROUTES:
                raise RequestError(HTTPStatus.NOT_FOUND, f"no such endpoint: {url.path}")
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise RequestError(HTTPStatus.LENGTH_REQUIRED, "Content-Length header required")
            if int(length) > MAX_BODY:
                raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                   f"body of {int(length):,} bytes exceeds the {MAX_BODY:,}-byte limit")
            body = self.rfile.read(int(length))
            image, min_confidence = parse_body(body, self.headers.get("Content-Type", ""), parse_qs(url.query))
            result = ROUTES[url.path](image, min_confidence, self.model)
        except RequestError as e:
            return self._json(e.status, {"error": e.reason})
        except DigitlabError as e:  # unreadable image and the like: the client's input
            return self._json(HTTPStatus.BAD_REQUEST, {"error": str(e)})
        self._json(HTTPStatus.OK, result)

    def _json(self, status: HTTPStatus, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        if not getattr(self.server, "quiet", False):
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


def make_server(host: str = "127.0.0.1", port: int = 8000, model=None, quiet: bool = False) -> ThreadingHTTPServer:
    """A ready server (port 0 picks a free one: see `server.server_address`)."""
    from digitlab.reader.recognize import get_model

    handler = type("BoundHandler", (Handler,), {"model": get_model(model)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.quiet = quiet
    return server
