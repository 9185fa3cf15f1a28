"""The REST API through an HTTP client against the app: every endpoint, every error case, every limit."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from digitlab import reader
from digitlab.serve import ServeConfig, create_app
from digitlab.serve.app import Loaded
from serve_util import REPO, Server, canvas, paper, png, png_claiming


def client_for(tmp_path, **settings) -> TestClient:
    settings.setdefault("feedback_db", str(tmp_path / "feedback.sqlite3"))
    return TestClient(create_app(ServeConfig(**settings)))


def wait_ready(client: TestClient) -> None:
    for _ in range(200):
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise TimeoutError(client.get("/readyz").json())


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    with client_for(tmp_path_factory.mktemp("api")) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def digits(mnist):
    _, (x, y) = mnist
    return x[:20], y[:20]


def upload(image: bytes, name="digit.png", kind="image/png") -> dict:
    return {"image": (name, image, kind)}


# ---------------------------------------------------------------------------- answers
def test_predict_accepts_every_way_of_sending_an_image(api, digits):
    x, y = digits
    data = png(canvas(x[0]))
    answers = [
        api.post("/v1/predict", files=upload(data)),
        api.post("/v1/predict", content=data, headers={"content-type": "image/png"}),
        api.post("/v1/predict", content=data, headers={"content-type": "application/octet-stream"}),
        api.post("/v1/predict", json={"image": base64.b64encode(data).decode()}),
        api.post("/v1/predict", json={"image": "data:image/png;base64," + base64.b64encode(data).decode()}),
    ]
    model = api.get("/v1/model").json()["model"]
    for r in answers:
        body = r.json()
        assert r.status_code == 200, body
        assert set(body) - {"guess"} == {"label", "confidence", "probabilities", "box", "status", "model"}
        assert body["label"] == y[0] and body["status"] == "ok" and body["model"] == model
        assert body["confidence"] > 0.9 and abs(sum(body["probabilities"]) - 1) < 1e-3
    assert len({json.dumps(r.json()) for r in answers}) == 1  # the same image gives the same answer every way
    r = api.post("/v1/predict", json={"pixels": x[1].tolist()})
    assert r.status_code == 200 and r.json()["label"] == y[1]


def test_predict_abstains_and_shows_what_the_model_saw(api, digits):
    x, y = digits
    blank = api.post("/v1/predict", files=upload(png(np.full((280, 280), 255, np.uint8)))).json()
    assert blank["label"] is None and blank["status"] == "no digit" and blank["probabilities"] is None
    unsure = api.post("/v1/predict?min_confidence=1.0", files=upload(png(canvas(x[0])))).json()
    assert unsure["label"] is None and unsure["status"] == "unsure" and unsure["confidence"] < 1.0
    seen = api.post("/v1/predict?include_image=true", files=upload(png(canvas(x[0])))).json()
    assert seen["image"].startswith("data:image/png;base64,")
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(base64.b64decode(seen["image"].split(",")[1]))).size == (28, 28)


def test_read_a_number_with_boxes_in_the_uploaded_pixels(api, digits):
    x, y = digits
    r = api.post("/v1/read", files=upload(png(paper(x[1:5]))))
    body = r.json()
    assert r.status_code == 200 and body["text"] == "".join(map(str, y[1:5]))
    # A 12x upscale is 1728 px wide, beyond the reader's working size: boxes must still be in upload pixels.
    scale = 12
    big = paper(x[1:5], scale=scale)
    body = api.post("/v1/read", files=upload(png(big))).json()
    assert body["text"] == "".join(map(str, y[1:5])) and len(body["digits"]) == 4
    cell = 36 * scale
    for i, d in enumerate(body["digits"]):
        left, top, right, bottom = d["box"]
        assert i * cell + 4 * scale - 2 * scale <= left < right <= (i + 1) * cell - 4 * scale + 2 * scale, d
        assert 0 <= top < bottom <= big.shape[0]
        assert right - left > 3 * scale and bottom - top > 10 * scale  # the digit's ink, not a 1024-px-space box
    assert api.post("/v1/read", files=upload(png(np.full((100, 300), 255, np.uint8)))).json()["text"] == ""
    # one digit on a wide page (the third of four cells): /v1/predict's box is in upload pixels too
    page = np.full((36 * scale, 4 * 36 * scale), 255, np.uint8)
    page[:, 2 * cell:3 * cell] = paper(x[3:4], scale=scale)
    body = api.post("/v1/predict", files=upload(png(page))).json()
    left, top, right, bottom = body["box"]
    assert body["label"] == y[3] and 2 * cell + 2 * scale <= left < right <= 3 * cell - 2 * scale, body["box"]
    assert 2 * scale <= top < bottom <= page.shape[0] - 2 * scale and right - left > 3 * scale, body["box"]


def test_batch(api, digits):
    x, y = digits
    files = [("image", (f"{i}.png", png(canvas(x[i])), "image/png")) for i in range(6)]
    r = api.post("/v1/predict/batch", files=files)
    assert r.status_code == 200 and [p["label"] for p in r.json()["results"]] == y[:6].tolist()
    files[3] = ("image", ("3.png", b"not an image", "image/png"))
    r = api.post("/v1/predict/batch", files=files)
    assert r.status_code == 400 and r.json()["detail"].startswith("image 3:")
    r = api.post("/v1/predict/batch", content=png(x[0]), headers={"content-type": "image/png"})
    assert r.status_code == 415


def test_batch_size_limit(tmp_path, digits):
    x, _ = digits
    with client_for(tmp_path, max_batch=3) as client:
        wait_ready(client)
        ok = client.post("/v1/predict/batch", files=[("image", ("a.png", png(x[i]), "image/png")) for i in range(3)])
        assert ok.status_code == 200
        for n in (4, 10):
            r = client.post("/v1/predict/batch", files=[("image", ("a.png", png(x[0]), "image/png"))] * n)
            assert r.status_code == 413 and r.json()["error"] == "batch_too_large"


# ---------------------------------------------------------------------------- refusals
TRUNCATED = None


@pytest.mark.parametrize("case, kwargs, status, error", [
    ("not an image", dict(content=b"hello, not an image", headers={"content-type": "image/png"}), 400, "not_an_image"),
    ("empty raw body", dict(content=b"", headers={"content-type": "image/png"}), 400, "empty_body"),
    ("empty upload", dict(files={"image": ("e.png", b"", "image/png")}), 400, "empty_body"),
    ("form without image", dict(files={"picture": ("e.png", b"x", "image/png")}), 400, "missing_image"),
    ("image as text field", dict(data={"image": "abc"}, files={"other": ("x", b"x")}), 400, "missing_image"),
    ("text/plain", dict(content=b"7", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"),
    ("no content type", dict(content=b"7"), 415, "unsupported_media_type"),
    ("form urlencoded", dict(data={"image": "x"}), 415, "unsupported_media_type"),
    ("invalid JSON", dict(content=b"{nope", headers={"content-type": "application/json"}), 400, "invalid_json"),
    ("empty JSON body", dict(content=b"", headers={"content-type": "application/json"}), 400, "empty_body"),
    ("JSON without image", dict(json={"img": "x"}), 422, "invalid_request"),
    ("JSON list", dict(json=[1, 2, 3]), 422, "invalid_request"),
    ("JSON both", dict(json={"image": "aGk=", "pixels": [[0] * 28] * 28}), 422, "invalid_request"),
    ("pixels 27 rows", dict(json={"pixels": [[0] * 28] * 27}), 422, "invalid_request"),
    ("pixel 300", dict(json={"pixels": [[300] * 28] * 28}), 422, "invalid_request"),
    ("pixels as text", dict(json={"pixels": "dots"}), 422, "invalid_request"),
    ("bad base64", dict(json={"image": "%%%"}), 400, "invalid_base64"),
    ("base64 of junk", dict(json={"image": base64.b64encode(b"junk").decode()}), 400, "not_an_image"),
    ("bomb header", dict(content=png_claiming(30000, 30000), headers={"content-type": "image/png"}), 413, "too_large"),
    ("huge claim", dict(content=png_claiming(100000, 100000), headers={"content-type": "image/png"}), 413,
     "too_large"),
    ("zero width", dict(content=png_claiming(0, 10), headers={"content-type": "image/png"}), 400, None),
    ("multipart garbage", dict(content=b"--x\r\nnonsense", headers={"content-type": "multipart/form-data; boundary=x"}),
     400, None),
])
def test_bad_requests_get_a_4xx_with_error_and_detail(api, case, kwargs, status, error):
    r = api.post("/v1/predict", **kwargs)
    body = r.json()
    assert r.status_code == status, (case, body)
    assert set(body) == {"error", "detail"} and body["detail"], body
    if error:
        assert body["error"] == error, body


def test_truncated_and_corrupt_images_get_400(api, digits):
    x, _ = digits
    data = png(canvas(x[0]))
    for broken in (data[: len(data) // 2], data[:40], data[:20] + b"\0" * 200 + data[220:]):
        r = api.post("/v1/predict", content=broken, headers={"content-type": "image/png"})
        assert r.status_code == 400 and r.json()["error"] in ("not_an_image", "corrupt_image"), r.json()


def test_query_validation_routes_and_methods(api, digits):
    x, _ = digits
    r = api.post("/v1/predict?min_confidence=2", files=upload(png(x[0])))
    assert r.status_code == 422 and r.json()["error"] == "invalid_request" and "min_confidence" in r.json()["detail"]
    r = api.get("/v1/nothing")
    assert r.status_code == 404 and r.json() == {"error": "not_found", "detail": "no such endpoint: /v1/nothing"}
    r = api.get("/v1/predict")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_body_size_limit(tmp_path, digits):
    x, _ = digits
    with client_for(tmp_path, max_body_bytes=20_000) as client:
        wait_ready(client)
        assert client.post("/v1/predict", files=upload(png(canvas(x[0])))).status_code == 200
        big = b"\x89PNG" + bytes(30_000)
        r = client.post("/v1/predict", content=big, headers={"content-type": "image/png"})
        assert r.status_code == 413 and r.json()["error"] == "too_large"

        def chunks():  # no Content-Length: the limit holds while the body streams in
            for _ in range(10):
                yield bytes(5_000)

        r = client.post("/v1/predict", content=chunks(), headers={"content-type": "image/png"})
        assert r.status_code == 413 and r.json()["error"] == "too_large"


def test_pixel_limit_is_read_from_the_header(tmp_path, digits):
    x, _ = digits
    with client_for(tmp_path, max_pixels=100_000) as client:
        wait_ready(client)
        assert client.post("/v1/predict", files=upload(png(canvas(x[0], 300)))).status_code == 200  # 90,000 px
        r = client.post("/v1/predict", files=upload(png(canvas(x[0], 320))))  # 102,400 px
        assert r.status_code == 413 and "100,000-pixel limit" in r.json()["detail"]


class SlowModel:
    """Wraps the real model: each network call sleeps, and the most images being read at once (in one
    batched call or in calls that overlap) is recorded."""

    def __init__(self, model, delay: float) -> None:
        self.model, self.delay, self.running, self.most = model, delay, 0, 0
        self.card = model.card
        self.lock = threading.Lock()

    def predict_proba(self, images):
        with self.lock:
            self.running += len(images)
            self.most = max(self.most, self.running)
        time.sleep(self.delay)
        try:
            return self.model.predict_proba(images)
        finally:
            with self.lock:
                self.running -= len(images)


def slow_down(client: TestClient, delay: float) -> SlowModel:
    service = client.app.state.service
    slow = SlowModel(service.loaded.model, delay)
    service.loaded = Loaded(slow, service.loaded.name, service.loaded.path, service.loaded.sha256,
                            service.loaded.loaded_at, service.loaded.stamp)
    return slow


def test_concurrent_inferences_are_bounded_and_the_excess_is_refused(tmp_path, digits):
    x, _ = digits
    with client_for(tmp_path, max_concurrent=2, max_waiting=2) as client:
        wait_ready(client)
        slow = slow_down(client, 0.3)
        codes: list[int] = []

        def one(i):
            codes.append(client.post("/v1/predict", files=upload(png(canvas(x[i % 20])))).status_code)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert slow.most == 2  # never more than max_concurrent requests read at once
        assert codes.count(200) >= 4 and set(codes) <= {200, 503}
        assert codes.count(503) >= 1  # 8 at once > 2 running + 2 waiting


def test_request_timeout(tmp_path, digits):
    x, _ = digits
    with client_for(tmp_path, request_timeout=0.3) as client:
        wait_ready(client)
        slow_down(client, 1.0)
        r = client.post("/v1/predict", files=upload(png(x[0])))
        assert r.status_code == 503 and r.json()["error"] == "timeout"
        assert client.get("/healthz").status_code == 200


def test_unexpected_failure_is_a_logged_json_500(tmp_path, digits, caplog):
    x, _ = digits
    with client_for(tmp_path) as client:
        wait_ready(client)
        service = client.app.state.service

        class Broken:
            card = {}

            def predict_proba(self, images):
                raise RuntimeError("boom")

        service.loaded = Loaded(Broken(), "broken", service.loaded.path, "", 0.0, (0, 0))
        r = client.post("/v1/predict", files=upload(png(canvas(x[0]))))
        assert r.status_code == 500 and r.json() == {"error": "internal", "detail": "unexpected server error (logged)"}
        assert any("boom" in (rec.exc_text or "") or "boom" in rec.getMessage() for rec in caplog.records)


# ---------------------------------------------------------------------------- the other endpoints
def test_health_ready_model_metrics_openapi_and_pad(api, digits):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready"}
    assert api.head("/").status_code == 200 and api.head("/healthz").status_code == 200
    card = api.get("/v1/model").json()
    assert card["model"].startswith("digit-model@") and len(card["sha256"]) == 64 and "normalization" in card["card"]
    api.post("/v1/predict", content=b"junk", headers={"content-type": "image/png"})
    metrics = api.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'digitlab_requests_total{endpoint="/v1/predict",method="POST",code="200"}' in text
    assert 'digitlab_request_errors_total{endpoint="/v1/predict",error="not_an_image"}' in text
    assert 'digitlab_request_duration_seconds_bucket{endpoint="/v1/predict",le="+Inf"}' in text
    spec = api.get("/openapi.json").json()
    for path in ("/v1/predict", "/v1/read", "/v1/predict/batch", "/v1/feedback", "/v1/model", "/v1/model/reload",
                 "/healthz", "/readyz", "/metrics"):
        assert path in spec["paths"], path
    assert {"Prediction", "Reading", "ErrorBody", "BatchPrediction"} <= set(spec["components"]["schemas"])
    assert "multipart/form-data" in spec["paths"]["/v1/predict"]["post"]["requestBody"]["content"]
    assert api.get("/docs").status_code == 200
    page = api.get("/").text
    assert 'data-testid="pad"' in page and 'data-testid="prediction"' in page and "http" not in page.split("<body")[1]
    assert api.get("/static/pad.js").status_code == 200


def test_old_api_routes_still_answer(api, digits):
    x, y = digits
    assert api.post("/api/predict", content=png(canvas(x[0])), headers={"content-type": "image/png"}).json()["label"] \
        == y[0]
    assert api.get("/api/health").json() == {"status": "ok"}


# ---------------------------------------------------------------------------- reload
def copy_model(folder, doc: str):
    """The bundled model as another file, its bytes changed (a new doc string) so its sha256 differs."""
    import onnx

    from digitlab import card

    proto = onnx.load(str(reader.BUNDLED))
    proto.doc_string = doc
    path, staging = folder / "model.onnx", folder / "staging" / "model.onnx"
    card.write(staging, proto.SerializeToString(), reader.bundled().card)  # a new checksum for the new bytes
    staging.with_suffix(".json").replace(path.with_suffix(".json"))
    staging.replace(path)  # atomic, the model file last: the file watch sees a complete pair
    return path


def test_serve_another_model_and_reload_without_dropping_requests(tmp_path, digits):
    x, y = digits
    path = copy_model(tmp_path, "first")
    with client_for(tmp_path, model=str(path), reload_token="secret") as client:
        wait_ready(client)
        first = client.get("/v1/model").json()["model"]
        assert first.startswith("model@")
        assert client.post("/v1/model/reload").status_code == 403
        answers, stop = [], threading.Event()

        def hammer(i):
            while not stop.is_set():
                r = client.post("/v1/predict", files=upload(png(canvas(x[i]))))
                answers.append((r.status_code, r.json().get("label") == y[i], r.json().get("model")))

        threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        copy_model(tmp_path, "second")
        r = client.post("/v1/model/reload", headers={"authorization": "Bearer secret"})
        second = r.json()["model"]
        assert r.status_code == 200 and second != first
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        assert answers and all(code == 200 and right for code, right, _ in answers)
        assert {m for *_, m in answers} <= {first, second} and answers[-1][2] == second
        # a broken new file: the reload fails with a reason, the old model keeps answering
        path.write_bytes(b"not onnx")
        r = client.post("/v1/model/reload", headers={"authorization": "Bearer secret"})
        assert r.status_code == 500 and r.json()["error"] == "reload_failed"
        assert client.post("/v1/predict", files=upload(png(canvas(x[0])))).json()["model"] == second


def test_file_watch_reloads(tmp_path, digits):
    path = copy_model(tmp_path, "first")
    with client_for(tmp_path, model=str(path), watch=True) as client:
        wait_ready(client)
        first = client.get("/v1/model").json()["model"]
        copy_model(tmp_path, "changed")
        for _ in range(60):
            if client.get("/v1/model").json()["model"] != first:
                break
            time.sleep(0.1)
        assert client.get("/v1/model").json()["model"] != first


def test_bad_model_is_not_ready(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"nope")
    with client_for(tmp_path, model=str(tmp_path / "bad.onnx")) as client:
        time.sleep(0.3)
        r = client.get("/readyz")
        assert r.status_code == 503 and r.json()["error"] == "not_ready"
        assert client.get("/healthz").status_code == 200


# ---------------------------------------------------------------------------- the command
def test_serve_command_answers_curl_style_upload(tmp_path, digits):
    """`digitlab serve` for real, as a user starts it, and the README's curl upload."""
    x, y = digits
    image = tmp_path / "seven.png"
    image.write_bytes(png(canvas(x[0])))
    with Server("--feedback-db", str(tmp_path / "fb.sqlite3")) as server:
        import httpx

        with image.open("rb") as f:
            r = httpx.post(server.url + "/v1/predict", files={"image": f}, timeout=30)
        assert r.status_code == 200 and r.json()["label"] == y[0]
    out = server.proc.stdout.read().decode()
    assert "serving the drawing pad on http://127.0.0.1:" in out


def test_serve_command_bad_model_is_a_one_line_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "digitlab.cli", "serve", "--model", str(tmp_path / "none.onnx")],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 1 and proc.stderr.startswith("digitlab: error:") and "Traceback" not in proc.stderr


def test_the_service_never_imports_torch():
    code = ("import sys; from digitlab.serve import create_app; create_app(); import digitlab.serve.protocol; "
            "bad = [m for m in ('torch', 'sklearn', 'digitlab.lab') if m in sys.modules]; "
            "print(bad); sys.exit(bool(bad))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------- issue 22
def test_several_digits_get_the_clis_hint(api, digits):
    """A 5-digit number sent to /v1/predict is still read as one digit, with the hint the CLI gives."""
    from digitlab.reader.hint import several_digits_hint

    x, _ = digits
    number = png(paper(x[1:6]))
    body = api.post("/v1/predict", files=upload(number)).json()
    assert body["hint"] == "looks like 5 digits: use POST /v1/read to read them as a number"
    assert body["hint"] == several_digits_hint(reader.classify(number), "use POST /v1/read")
    assert "hint" not in api.post("/v1/predict", files=upload(png(canvas(x[0])))).json()
    assert "hint" in api.get("/openapi.json").json()["components"]["schemas"]["Prediction"]["properties"]


def test_request_bodies_are_documented_from_the_models(api):
    spec = api.get("/openapi.json").json()
    predict = spec["paths"]["/v1/predict"]["post"]
    content = predict["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "image/*", "application/json"}
    assert "pixels" in content["application/json"]["schema"]["properties"]
    assert {p["name"] for p in predict["parameters"]} == {"min_confidence", "include_image", "model"}
    assert "404" in predict["responses"]  # ?model=NAME the service does not serve
    feedback = spec["paths"]["/v1/feedback"]["post"]
    form = feedback["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert {"image", "label", "predicted", "user"} <= set(form["properties"])
    assert form["properties"]["label"]["maximum"] == 9
    assert {"429", "507"} <= set(feedback["responses"])
    batch = spec["paths"]["/v1/predict/batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert batch["schema"]  # FastAPI's own, from the declared File parameter


def test_requests_arriving_together_share_network_calls(tmp_path, digits):
    """Micro-batching: 24 requests at once are read in fewer network calls than images, each answer as
    the request alone gets it."""
    x, _ = digits
    bodies = [png(canvas(x[i])) for i in range(12)]
    with client_for(tmp_path, max_concurrent=4, batch_wait_ms=20) as client:
        wait_ready(client)
        alone = [client.post("/v1/predict", content=b, headers={"content-type": "image/png"}).json() for b in bodies]
        batcher = client.app.state.service.loaded.batcher
        calls, images = batcher.calls, batcher.images
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda b: client.post("/v1/predict", content=b,
                                                           headers={"content-type": "image/png"}).json(), bodies * 2))
        assert together == alone * 2
        assert batcher.images - images == 24 and batcher.calls - calls < 24, (batcher.calls - calls)


def test_a_bomb_header_gets_the_services_own_413_and_no_pillow_warning(tmp_path):
    """One check with the service's limits: its message, not Pillow's, and nothing from Pillow in the log."""
    import io

    from PIL import Image

    def gif_claiming(width: int, height: int) -> bytes:
        buf = io.BytesIO()
        Image.new("L", (1, 1)).save(buf, format="GIF")
        data = bytearray(buf.getvalue())
        data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")  # the logical screen: Pillow's size
        return bytes(data)

    with Server("--feedback-db", str(tmp_path / "fb.sqlite3"), "--workers", "1", "--log-level", "info") as server:
        import httpx

        for claim, size in [(png_claiming(30000, 30000), "30000x30000 = 900,000,000"),
                            (png_claiming(10000, 10000), "10000x10000 = 100,000,000")]:
            r = httpx.post(server.url + "/v1/predict", content=claim, headers={"content-type": "image/png"}, timeout=30)
            assert r.status_code == 413 and r.json()["error"] == "too_large", r.json()
            assert size in r.json()["detail"] and "40,000,000-pixel limit" in r.json()["detail"], r.json()
            assert "decompression bomb" not in r.json()["detail"]
        # 130 M pixels: within Pillow's warning range (89-179 M), read by Pillow (not a PNG)
        r = httpx.post(server.url + "/v1/predict", content=gif_claiming(65000, 2000),
                       headers={"content-type": "image/gif"}, timeout=30)
        assert r.status_code == 413 and "65000x2000 = 130,000,000" in r.json()["detail"], r.json()
    log = server.proc.stderr.read().decode()
    assert "DecompressionBomb" not in log and "Traceback" not in log, log[-2000:]


@pytest.mark.slow  # starts a worker per core
def test_serve_uses_every_core_and_its_workers_die_with_it(tmp_path):
    """`digitlab serve` defaults to one worker per core; kill -9 of the supervisor takes the workers along."""
    import os
    import signal
    from pathlib import Path

    cores = len(os.sched_getaffinity(0))
    with Server("--feedback-db", str(tmp_path / "fb.sqlite3")) as server:
        out = server.proc.stdout.readline().decode()
        assert f"{cores} worker" in out, out
        children = [int(c) for t in Path(f"/proc/{server.proc.pid}/task").iterdir()
                    for c in (t / "children").read_text().split()]
        workers = [c for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(workers) == cores, children
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(Path(f"/proc/{w}").exists() for w in workers):
            time.sleep(0.1)
        assert not any(Path(f"/proc/{w}").exists() for w in workers), "orphaned workers outlived the server"
