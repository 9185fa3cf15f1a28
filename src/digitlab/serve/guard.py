"""`Guard`, the outermost layer (pure ASGI, so it sees every request, the refused ones included):
the body-size limit while the body streams in, the request timeout, the JSON 500 for anything
unexpected, and the metrics."""

from __future__ import annotations

import asyncio
import logging
import time

from digitlab.serve.errors import ApiError, error_response

log = logging.getLogger("digitlab.serve")


class Guard:
    """Body-size limit while streaming, request timeout, JSON 500 on anything unexpected, metrics."""

    def __init__(self, app, service) -> None:
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
