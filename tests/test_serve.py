"""The REST API over real HTTP, and the drawing pad in a real (headless) Chromium."""

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from digitlab.serve import make_server

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def server():
    srv = make_server("127.0.0.1", 0, quiet=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def post(url, body: bytes, content_type="image/png"):
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def paper(digits: np.ndarray) -> np.ndarray:
    """MNIST digits side by side, upscaled 4x, dark ink on white paper, as a user would send."""
    row = np.concatenate([np.pad(d, 4) for d in digits], axis=1)
    big = np.asarray(Image.fromarray(row).resize((row.shape[1] * 4, row.shape[0] * 4), Image.BICUBIC))
    return 255 - big


def test_predict_and_read(server, mnist):
    _, (x, y) = mnist
    status, body = post(server + "/api/predict", png(paper(x[:1])))
    assert status == 200 and body["label"] == y[0] and body["confidence"] > 0.5
    assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-3
    status, body = post(server + "/api/read", png(paper(x[1:5])))
    assert status == 200 and body["text"] == "".join(map(str, y[1:5]))
    assert [d["label"] for d in body["digits"]] == y[1:5].tolist()
    data_url = "data:image/png;base64," + base64.b64encode(png(paper(x[:1]))).decode()
    status, body = post(server + "/api/predict", json.dumps({"image": data_url}).encode(), "application/json")
    assert status == 200 and body["label"] == y[0]


def test_blank_canvas_is_no_digit(server):
    status, body = post(server + "/api/predict", png(np.full((280, 280), 255, np.uint8)))
    assert status == 200 and body["label"] is None and body["status"] == "no digit"
    status, body = post(server + "/api/read", png(np.full((100, 300), 255, np.uint8)))
    assert status == 200 and body == {"text": "", "digits": []}


@pytest.mark.parametrize(
    "path, body, content_type, status, words",
    [
        ("/api/predict", b"not an image", "image/png", 400, "not a readable image"),
        ("/api/predict", b"", "image/png", 400, "empty body"),
        ("/api/predict", b"{nope", "application/json", 400, "JSON body"),
        ("/api/predict", b'{"image": "%%%"}', "application/json", 400, "base64"),
        ("/api/predict?min_confidence=2", b"x", "image/png", 400, "between 0 and 1"),
        ("/api/nothing", b"x", "image/png", 404, "no such endpoint"),
    ],
)
def test_bad_requests_get_4xx_json(server, path, body, content_type, status, words):
    code, reply = post(server + path, body, content_type)
    assert code == status and words in reply["error"]


def test_health_and_page(server):
    with urllib.request.urlopen(server + "/api/health", timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"
    with urllib.request.urlopen(server + "/", timeout=10) as r:
        assert b"<canvas" in r.read()


def test_serve_command_starts_and_answers(tmp_path):
    """`digitlab serve` for real, as a user starts it."""
    proc = subprocess.Popen([sys.executable, "-m", "digitlab.cli", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "serving" in line, proc.stderr.read() if proc.poll() is not None else line
        url = line.split("http://")[1].split("/")[0]
        with urllib.request.urlopen(f"http://{url}/api/health", timeout=10) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _stroke(page, box, points):
    page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    page.mouse.down()
    for px, py in points[1:]:
        page.mouse.move(box["x"] + px, box["y"] + py, steps=8)
    page.mouse.up()


@pytest.mark.slow
def test_drawing_pad_in_a_real_browser(server):
    if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: ./setup.sh installs the Debian package 'chromium'")
        pytest.skip("Chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            page.goto(server + "/")
            box = page.locator("#pad").bounding_box()
            # A "7": a bar across the top, then a stroke down to the left; and a "1" beside it.
            _stroke(page, box, [(60, 60), (170, 60), (110, 230)])
            _stroke(page, box, [(330, 50), (330, 230)])
            page.click("#read")
            page.wait_for_function("document.getElementById('result').textContent.length > 0 && "
                                   "document.getElementById('result').textContent !== '…'", timeout=20000)
            assert page.text_content("#result") == "71"
            page.click("#clear")
            page.uncheck("#multi")
            page.click("#read")
            page.wait_for_function("document.getElementById('result').textContent === 'no digit'", timeout=20000)
            page.screenshot(path=str(os.environ.get("DIGITLAB_SCREENSHOT", "/tmp/digitlab-pad.png")))
        finally:
            browser.close()
