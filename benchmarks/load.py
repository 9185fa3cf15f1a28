"""Load test of `digitlab serve` with wrk, beside a naive FastAPI + onnxruntime server, on loopback only.

    python benchmarks/load.py                       # both servers, 1 and 32 connections, 20 s each
    python benchmarks/load.py --memory-requests 100000 --memory-time 600
    python benchmarks/load.py --server granian      # digitlab's app under granian instead of uvicorn

Each server runs in its own processes; wrk (Debian package `wrk`) drives it from another, so the Python
client does not measure itself. The request is a 280x280 canvas PNG of a real MNIST test digit (the
pad's size), POSTed as raw image/png (both servers take it) and, for digitlab, as a multipart upload
too. The baseline (`naive_server.py`: two uvicorn workers, Pillow resize to 28x28, one network call per
request) runs in the same invocation, so the ratio compares like with like on a shared machine.
`digitlab serve` runs with its default settings (one worker per core) unless --workers is given.

Prints requests/s, p50/p99 latency, errors (socket errors + non-2xx) and the server's resident memory
(all its processes) before and after, the load average before and after, the req/s ratio at the most
connections, then one JSON line with everything. The memory phase stops at --memory-requests or
--memory-time, whichever comes first, and says how many requests it drove.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from _cpu import print_cpu

REPO = Path(__file__).resolve().parents[1]
WRK = shutil.which("wrk") or "/usr/bin/wrk"

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "%(content_type)s"
local f = io.open("%(body)s", "rb")
wrk.body = f:read("*all")
f:close()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests": %%d, "seconds": %%.3f, "p50_ms": %%.3f, "p99_ms": %%.3f, ' ..
    '"mean_ms": %%.3f, "socket_errors": %%d, "non_2xx": %%d}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.mean / 1e3, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def canvas_png() -> tuple[bytes, int]:
    """The first MNIST test digit as the pad sends it: 280x280, black ink on white."""
    sys.path.insert(0, str(REPO / "src"))
    from digitlab.data import load

    x, y = load("mnist", "test")
    big = 255 - np.asarray(Image.fromarray(x[0]).resize((280, 280), Image.BICUBIC))
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG")
    return buf.getvalue(), int(y[0])


def multipart(data: bytes, boundary: str = "digitlabbenchmarkboundary") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"digit.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def reader_alone(data: bytes, n: int = 200) -> float:
    """The reader's own work on one request's image, in this process on one thread (decode, preprocess,
    network, as the service does it), median ms: the floor under any server's CPU per request."""
    sys.path.insert(0, str(REPO / "src"))
    from digitlab import reader
    from digitlab.serve.config import ServeConfig
    from digitlab.serve.work import picture

    model, cfg, times = reader.bundled(), ServeConfig(), []
    for _ in range(n):
        start = time.perf_counter()
        reader.classify(picture(data, cfg), model=model)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (uvicorn's workers)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return total


def tree(pid: int) -> list[int]:
    """A process and all its descendants."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except FileNotFoundError:
            pass
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by a process and its descendants: what a request costs the
    server, a measure that other jobs on a shared machine disturb far less than requests/s."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / tick


class Served:
    def __init__(self, argv: list[str], url: str, env: dict) -> None:
        self.url = url
        self.proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     start_new_session=True)

    def wait(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.proc.stderr.read().decode()[-2000:])
            try:
                with urllib.request.urlopen(self.url + path, timeout=2):
                    return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError(f"{self.url} not up")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def digitlab_server(workers: int | None, server: str, tmp: Path, extra: list[str]) -> Served:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    if server == "granian":
        sys.path.insert(0, str(REPO / "src"))
        from digitlab.serve.config import ENV, ServeConfig

        env[ENV] = ServeConfig(feedback_db=str(tmp / "feedback.sqlite3")).to_env()
        argv = [str(Path(sys.executable).with_name("granian")), "--interface", "asgi", "--factory",
                "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers or len(os.sched_getaffinity(0))),
                "--log-level", "error", "digitlab.serve.app:app_from_env"]
    else:
        argv = [sys.executable, "-m", "digitlab.cli", "serve", "--port", str(port),
                "--feedback-db", str(tmp / "feedback.sqlite3"), "--log-level", "error"]
        argv += ["--workers", str(workers)] if workers else []  # default: the service's own (one per core)
        argv += extra
    served = Served(argv, f"http://127.0.0.1:{port}", env)
    served.wait("/readyz")
    time.sleep(2.0)  # /readyz answered by one worker: give the others time to load their model
    return served


def naive_server(tmp: Path) -> Served:
    """benchmarks/naive_server.py on two uvicorn workers, the bundled model."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent),
           "NAIVE_MODEL": str(REPO / "src" / "digitlab" / "reader" / "assets" / "digit-model.onnx")}
    argv = [sys.executable, "-m", "uvicorn", "naive_server:app", "--host", "127.0.0.1", "--port", str(port),
            "--workers", "2", "--log-level", "error", "--no-access-log"]
    served = Served(argv, f"http://127.0.0.1:{port}", env)
    served.wait("/docs")
    time.sleep(2.0)
    return served


def wrk(url: str, body: Path, content_type: str, connections: int, seconds: float, tmp: Path) -> dict:
    script = tmp / f"post-{abs(hash((str(body), content_type)))}.lua"
    script.write_text(LUA % {"content_type": content_type, "body": body})
    argv = [WRK, "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed: {out.stdout[-500:]} {out.stderr[-500:]}")
    result = json.loads(line.removeprefix("WRKJSON "))
    result["rps"] = result["requests"] / result["seconds"]
    result["errors"] = result["socket_errors"] + result["non_2xx"]
    return result


def check_answer(url: str, body: bytes, content_type: str, label: int) -> None:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    with urllib.request.urlopen(request, timeout=30) as r:
        answer = json.loads(r.read())
    if answer.get("label") != label:
        raise RuntimeError(f"{url} answered {answer}, expected label {label}")


def main() -> None:
    cpu = print_cpu()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="per wrk run")
    parser.add_argument("--connections", default="1,32", help="comma-separated")
    parser.add_argument("--workers", type=int, default=None,
                        help="digitlab's worker processes (default: digitlab serve's own default, one per core)")
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn",
                        help="the ASGI server digitlab's app runs on (uvicorn: `digitlab serve` itself)")
    parser.add_argument("--memory-requests", type=int, default=0, help="requests of the memory phase (0: skip it)")
    parser.add_argument("--memory-time", type=float, default=300, help="time cap of the memory phase, seconds")
    parser.add_argument("--no-baseline", action="store_true", help="leave out the naive server")
    parser.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                        help="an extra `digitlab serve` argument (repeat), e.g. --serve-arg=--batch-wait-ms=0")
    parser.add_argument("--no-multipart", action="store_true", help="only raw PNG bodies")
    args = parser.parse_args()
    if not Path(WRK).exists():
        sys.exit("load.py: wrk not found (Debian package 'wrk')")
    connections = [int(c) for c in args.connections.split(",")]
    data, label = canvas_png()
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} "
          f"({len(os.sched_getaffinity(0))} usable cores)", flush=True)
    report = {"cpu": cpu, "cores": os.cpu_count(), "image_bytes": len(data), "load_before": load_before,
              "runs": [], "reader_alone_ms": reader_alone(data)}
    print(f"the reader alone, in process: {report['reader_alone_ms']:.2f} ms per canvas (median)", flush=True)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "digit.png").write_bytes(data)
        form, form_type = multipart(data)
        (tmp / "form.bin").write_bytes(form)
        digitlab = f"digitlab ({args.server})"
        servers = [(digitlab, lambda: digitlab_server(args.workers, args.server, tmp, args.serve_arg))]
        if not args.no_baseline:
            servers.insert(0, ("naive", lambda: naive_server(tmp)))
        for name, start in servers:
            served = start()
            try:
                path = "/predict" if name == "naive" else "/v1/predict"
                cases = [("raw", path, "digit.png", "image/png")]
                if name != "naive" and not args.no_multipart:
                    cases.append(("multipart", path, "form.bin", form_type))
                for kind, path, body, ctype in cases:
                    check_answer(served.url + path, (tmp / body).read_bytes(), ctype, label)
                    wrk(served.url + path, tmp / body, ctype, 4, 2, tmp)  # warm-up, not counted
                    for c in connections:
                        before, cpu_before = rss_bytes(served.proc.pid), cpu_seconds(served.proc.pid)
                        r = wrk(served.url + path, tmp / body, ctype, c, args.seconds, tmp)
                        after, cpu_after = rss_bytes(served.proc.pid), cpu_seconds(served.proc.pid)
                        r["cpu_ms_per_request"] = 1000 * (cpu_after - cpu_before) / max(1, r["requests"])
                        run = {"server": name, "body": kind, "connections": c, **r,
                               "rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20}
                        report["runs"].append(run)
                        print(f"{name:<18} {kind:<9} c={c:<3} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:7.2f} ms  "
                              f"p99 {r['p99_ms']:7.2f} ms  errors {r['errors']:<5} "
                              f"server CPU {r['cpu_ms_per_request']:5.2f} ms/req  "
                              f"rss {before / 2**20:6.1f} -> {after / 2**20:6.1f} MB", flush=True)
                if name != "naive" and args.memory_requests:
                    report["memory"] = memory_phase(served, tmp, form_type, args)
            finally:
                served.stop()
    report["load_after"] = load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    most = max(connections)
    rps = {r["server"]: r["rps"] for r in report["runs"] if r["body"] == "raw" and r["connections"] == most}
    if "naive" in rps and digitlab in rps:
        report["ratio"] = rps[digitlab] / rps["naive"]
        print(f"ratio at {most} connections, raw PNG: {digitlab} {rps[digitlab]:.0f} req/s / naive "
              f"{rps['naive']:.0f} req/s = {report['ratio']:.2f}x")
        cpu = {r["server"]: r["cpu_ms_per_request"] for r in report["runs"]
               if r["body"] == "raw" and r["connections"] == most}
        print(f"server CPU per request at {most} connections: {digitlab} {cpu[digitlab]:.2f} ms, naive "
              f"{cpu['naive']:.2f} ms")
    print(json.dumps(report))


def memory_phase(served: Served, tmp: Path, form_type: str, args) -> dict:
    """Drives multipart uploads until --memory-requests are done (or --memory-time passes)."""
    before = rss_bytes(served.proc.pid)
    done, errors, sockets, statuses, start = 0, 0, 0, 0, time.monotonic()
    while done < args.memory_requests and time.monotonic() - start < args.memory_time:
        left = args.memory_time - (time.monotonic() - start)
        r = wrk(served.url + "/v1/predict", tmp / "form.bin", form_type, 32, max(1.0, min(30.0, left)), tmp)
        done, errors = done + r["requests"], errors + r["errors"]
        sockets, statuses = sockets + r["socket_errors"], statuses + r["non_2xx"]
    after = rss_bytes(served.proc.pid)
    growth = (after - before) / before
    print(f"memory: {done:,} requests in {time.monotonic() - start:.0f} s, errors {errors} (socket {sockets}, "
          f"non-2xx {statuses}), rss {before / 2**20:.1f} -> {after / 2**20:.1f} MB ({100 * growth:+.1f}%)",
          flush=True)
    return {"requests": done, "errors": errors, "socket_errors": sockets, "non_2xx": statuses,
            "rss_before_mb": before / 2**20, "rss_after_mb": after / 2**20, "growth": growth}


if __name__ == "__main__":
    main()
