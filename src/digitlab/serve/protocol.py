"""uvicorn's httptools protocol with a deadline for the request headers.

uvicorn times out idle keep-alive connections but not a client that dribbles its headers one byte at
a time (slowloris): each such connection would be held forever. This one answers 408 and closes the
connection when the headers of a request are not complete within `header_timeout` seconds. Slow
bodies are the app's business (the request timeout in `app.Guard`)."""

from __future__ import annotations

import asyncio
import functools

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from digitlab.serve.config import ServeConfig

_BODY = b'{"error":"timeout","detail":"the request headers did not arrive in time"}'
_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(_BODY)) + _BODY


@functools.cache
def header_timeout() -> float:
    return ServeConfig.from_env().header_timeout  # the workers get their settings through the environment


class HeaderTimeoutProtocol(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(header_timeout(), self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.transport.write(_408)
            self.transport.close()
