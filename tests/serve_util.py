"""Helpers of the service tests: images as users send them, and a real server in a subprocess."""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def canvas(digit: np.ndarray, size: int = 280) -> np.ndarray:
    """An MNIST digit as the pad sends it: upscaled to size x size, black ink on white."""
    return 255 - np.asarray(Image.fromarray(digit).resize((size, size), Image.BICUBIC))


def paper(digits: np.ndarray, scale: int = 4) -> np.ndarray:
    """MNIST digits side by side, 4 px apart, upscaled, dark ink on white paper."""
    row = np.concatenate([np.pad(d, 4) for d in digits], axis=1)
    big = np.asarray(Image.fromarray(row).resize((row.shape[1] * scale, row.shape[0] * scale), Image.BICUBIC))
    return 255 - big


def png_claiming(width: int, height: int) -> bytes:
    """A ~70-byte PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`digitlab serve` in a subprocess on a free loopback port; stopped on exit (SIGTERM, then SIGKILL)."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {**os.environ, "PYTHONPATH": str(REPO / "src"), **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "digitlab.cli", "serve", "--port", str(self.port), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment, cwd=REPO)

    def __enter__(self) -> Server:
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TimeoutError("server not ready")

    def rss(self) -> int:
        """Resident memory of the server process, bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def write_model(path, shift: int = 0, doc: str = "") -> None:
    """The bundled model as another exported file whose answers are shifted: it reads digit d as
    (d + shift) % 10 (its classifier's rows rolled), so which model answered shows in the label."""
    import onnx
    from onnx import numpy_helper

    from digitlab import card, reader

    proto = onnx.load(str(reader.BUNDLED))
    for init in proto.graph.initializer:
        if init.dims[0] == 10 and init.name.endswith(("weight", "bias")):  # the last Linear layer
            init.CopyFrom(numpy_helper.from_array(np.roll(numpy_helper.to_array(init), shift, axis=0), init.name))
    proto.doc_string = doc or f"shifted by {shift}"  # different bytes, a different sha256
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / ".staging" / path.name
    card.write(staging, proto.SerializeToString(), reader.bundled().card)
    staging.with_suffix(".json").replace(path.with_suffix(".json"))
    staging.replace(path)  # the model file last: a watch never sees a new file beside an old card
