"""A bounded hostile burst on loopback: malformed, oversized and slow (slowloris) requests mixed with good
ones. Every bad one gets its 4xx or a timeout, every good one its right answer, and the server stays
healthy with flat memory."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serve_util import Server, canvas, png, png_claiming

pytestmark = pytest.mark.slow


def raw(url: str, data: bytes, read_timeout: float = 15.0) -> bytes:
    """Sends bytes on a fresh connection, returns what comes back until the server closes or stops."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=read_timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
                if b"\r\n\r\n" in out and b"connection: close" not in out.lower():
                    head, _, body = out.partition(b"\r\n\r\n")
                    lines = head.lower().split(b"\r\n")
                    length = [int(h.split(b":")[1]) for h in lines if h.startswith(b"content-length")]
                    if length and len(body) >= length[0]:
                        break
        except (TimeoutError, ConnectionResetError):
            pass
        return out


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0


def slowloris(url: str, header_timeout: float) -> tuple[int, float]:
    """Headers one byte at a time, never finished: the server must answer 408 and close."""
    host, port = url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=header_timeout + 10) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\n")
        reply = b""
        try:
            for byte in b"X-Slow: " + b"a" * 200:
                s.sendall(bytes([byte]))
                s.settimeout(0.3)
                try:
                    chunk = s.recv(4096)
                except TimeoutError:
                    continue
                if not chunk:
                    break
                reply += chunk
        except (BrokenPipeError, ConnectionResetError):
            pass
        return status_of(reply), time.monotonic() - start


def slow_body(url: str) -> int:
    """Complete headers, then a body that trickles in: the request timeout answers 408."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=20) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 5000\r\n\r\n")
        reply = b""
        try:
            for _ in range(40):
                s.sendall(b"\0" * 10)
                s.settimeout(0.25)
                try:
                    reply += s.recv(4096)
                    if reply:
                        break
                except TimeoutError:
                    pass
        except (BrokenPipeError, ConnectionResetError):
            pass
        return status_of(reply)


def test_hostile_burst(tmp_path, mnist):
    _, (x, y) = mnist
    good = [(png(canvas(x[i])), int(y[i])) for i in range(40)]
    def post(kind: bytes, body: bytes, length: int | None = None) -> bytes:
        return (b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
                % (kind, len(body) if length is None else length)) + body

    bad = [
        (post(b"image/png", b"not a png"), 400),
        (post(b"application/json", b"{nope"), 400),
        (post(b"application/json", b'{"img": 1}'), 422),
        (post(b"text/plain", b"7"), 415),
        (post(b"image/png", bytes(1000), length=999_999_999), 413),
        (post(b"image/png", png_claiming(60000, 60000)), 413),
        (b"\x16\x03\x01 garbage that is not HTTP\r\n\r\n", 400),
        (b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 404),  # a huge URL: refused, not a crash
    ]
    # one worker: the process whose memory is measured is the one that answers
    with Server("--feedback-db", str(tmp_path / "fb.sqlite3"), "--workers", "1", "--timeout", "2",
                "--header-timeout", "2", "--max-body-mb", "2") as server:
        client = httpx.Client(base_url=server.url, timeout=30)

        def ask(item) -> bool:
            data, label = item
            r = client.post("/v1/predict", content=data, headers={"content-type": "image/png"})
            return r.status_code == 200 and r.json()["label"] == label

        for item in good[:5]:  # warm up
            ask(item)
        rss = [server.rss()]
        for _ in range(2):
            with ThreadPoolExecutor(24) as pool:
                lorises = [pool.submit(slowloris, server.url, 2.0) for _ in range(6)]
                trickles = [pool.submit(slow_body, server.url) for _ in range(4)]
                bads = [(pool.submit(raw, server.url, data), want) for data, want in bad * 3]
                goods = [pool.submit(ask, item) for item in good]
                assert all(f.result() for f in goods), "a good request got a wrong answer or an error"
                for f, want in bads:
                    got = status_of(f.result())
                    assert got == want or (want == 404 and got in (400, 414, 431)), (want, f.result()[:200])
                for f in lorises:
                    code, seconds = f.result()
                    assert code == 408 and seconds < 6, (code, seconds)
                assert all(f.result() in (408, 413) for f in trickles), [f.result() for f in trickles]
            rss.append(server.rss())
        assert client.get("/healthz").json() == {"status": "ok"}
        assert ask(good[0])
        metrics = client.get("/metrics").text
        assert 'code="200"' in metrics and 'error="timeout"' in metrics
        # memory flat: the second round adds (almost) nothing over the first
        assert rss[2] - rss[1] < 0.05 * rss[1] + 8e6, [f"{r / 1e6:.0f} MB" for r in rss]
    print("rss MB:", [round(r / 1e6) for r in rss], json.dumps({"good": len(good), "bad": len(bad) * 3}))
