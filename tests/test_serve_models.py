"""Several people's models in one service (`digitlab serve --models DIR`): chosen by name, loaded lazily
into a bounded cache, found and replaced by the watch, refused by name with a 404."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from digitlab.serve import ServeConfig, create_app
from digitlab.serve import models as serve_models
from digitlab.serve.models import ModelFolder, discover
from serve_util import REPO, canvas, png, write_model


@contextlib.contextmanager
def serving(tmp_path, **settings) -> Iterator[TestClient]:
    """The app in-process, once its default model is loaded."""
    with TestClient(create_app(ServeConfig(feedback_db=str(tmp_path / "fb.sqlite3"), **settings))) as client:
        for _ in range(300):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.02)
        yield client


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_model(root / "alice" / "model.onnx", shift=1)  # what `digitlab finetune --out DIR/alice` writes
    write_model(root / "bob.onnx", shift=2)
    (root / "notes.txt").write_text("not a model")
    return root


@pytest.fixture(scope="module")
def seven(mnist):
    _, (x, y) = mnist
    i = int(np.flatnonzero(y == 7)[0])
    return png(canvas(x[i]))


def predict(client: TestClient, image: bytes, model: str | None = None):
    return client.post("/v1/predict" + (f"?model={model}" if model else ""), files={"image": ("d.png", image)})


def test_two_models_each_answer_by_name_beside_the_default(tmp_path, folder, seven):
    with serving(tmp_path, models=str(folder)) as client:
        default = predict(client, seven).json()
        assert default["label"] == 7 and default["model"].startswith("digit-model@")
        alice, bob = predict(client, seven, "alice").json(), predict(client, seven, "bob").json()
        assert alice["label"] == 8 and alice["model"].startswith("alice@")
        assert bob["label"] == 9 and bob["model"].startswith("bob@")
        assert predict(client, seven, "digit-model").json()["model"] == default["model"]  # the default by name
        # the other reading routes and the card take the same parameter
        assert client.post("/v1/read?model=alice", files={"image": ("d.png", seven)}).json()["text"] == "8"
        batch = client.post("/v1/predict/batch?model=bob", files=[("image", ("a.png", seven)),
                                                                  ("image", ("b.png", seven))]).json()
        assert [r["label"] for r in batch["results"]] == [9, 9] and batch["model"].startswith("bob@")
        assert client.get("/v1/model?model=alice").json()["model"] == alice["model"]
        listed = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert set(listed) == {"digit-model", "alice", "bob"} and listed["digit-model"]["default"]
        assert listed["alice"]["model"] == alice["model"]


def test_unknown_model_is_a_404_with_a_reason(tmp_path, folder, seven):
    with serving(tmp_path, models=str(folder)) as client:
        r = predict(client, seven, "carol")
        assert r.status_code == 404 and r.json()["error"] == "unknown_model"
        assert "'carol'" in r.json()["detail"] and "alice, bob" in r.json()["detail"]
        assert predict(client, seven, "x" * 101).status_code == 422  # longer than any name
    with serving(tmp_path) as client:  # without --models: one model, and it says so
        r = predict(client, seven, "alice")
        assert r.status_code == 404 and "--models" in r.json()["detail"]
        assert client.get("/v1/models").json()["models"][0]["default"]


def test_a_file_that_does_not_load_answers_its_own_requests_with_a_reason(tmp_path, folder, seven):
    broken = tmp_path / "models"
    broken.mkdir()
    (broken / "broken.onnx").write_bytes(b"not onnx")
    with serving(tmp_path, models=str(broken)) as client:
        r = predict(client, seven, "broken")
        assert r.status_code == 503 and r.json()["error"] == "model_not_loadable" and "broken" in r.json()["detail"]
        assert predict(client, seven).json()["label"] == 7  # the default is unaffected


def test_models_load_lazily_once_per_name_and_at_most_cache_size_at_once(tmp_path, folder, seven, monkeypatch):
    loads = []
    real = serve_models.load_model

    def slow_load(path, batch_wait=0.0015, name=None):
        loads.append(name)
        time.sleep(0.2)  # a slow disk: requests arriving meanwhile must wait for this load, not start another
        return real(path, batch_wait, name)

    monkeypatch.setattr(serve_models, "load_model", slow_load)
    root = tmp_path / "models"
    for i, name in enumerate(("alice", "bob", "carol"), 1):
        write_model(root / name / "model.onnx", shift=i)
    with serving(tmp_path, models=str(root), models_cache=2) as client:
        models = client.app.state.service.models
        assert loads == [] and models.loaded_names() == []  # nothing loaded before it is asked for
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: predict(client, seven, ("alice", "bob")[i % 2]).json(), range(16)))
        assert [a["label"] for a in answers] == [8, 9] * 8
        assert sorted(loads) == ["alice", "bob"]  # each loaded once, however many asked at once
        assert predict(client, seven, "alice").json()["label"] == 8  # alice used last: bob is the oldest
        assert predict(client, seven, "carol").json()["label"] == 0
        assert models.loaded_names() == ["alice", "carol"]  # bob dropped: the cache holds two
        assert predict(client, seven, "bob").json()["label"] == 9 and loads[-1] == "bob"  # loaded again


def test_watch_finds_new_and_replaced_models(tmp_path, seven):
    root = tmp_path / "models"
    write_model(root / "alice" / "model.onnx", shift=1)
    with serving(tmp_path, models=str(root), watch=True) as client:
        first = predict(client, seven, "alice").json()
        assert first["label"] == 8
        assert predict(client, seven, "carol").status_code == 404
        write_model(root / "carol" / "model.onnx", shift=3)  # a new person
        write_model(root / "alice" / "model.onnx", shift=4)  # alice fine-tuned again
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            carol, alice = predict(client, seven, "carol"), predict(client, seven, "alice").json()
            if carol.status_code == 200 and alice["model"] != first["model"]:
                break
            time.sleep(0.1)
        assert carol.json()["label"] == 0 and carol.json()["model"].startswith("carol@")
        assert alice["label"] == 1 and alice["model"].startswith("alice@") and alice["model"] != first["model"]


def test_discover_names_files_and_folders_and_skips_what_is_not_a_model(tmp_path):
    (tmp_path / "alice").mkdir()
    (tmp_path / "alice" / "model.onnx").write_bytes(b"x")
    (tmp_path / "bob.onnx").write_bytes(b"x")
    (tmp_path / ".bob.onnx.1a2b.tmp").write_bytes(b"x")  # an atomic write in progress
    (tmp_path / "odd name.onnx").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    assert sorted(discover(tmp_path)) == ["alice", "bob"]
    folder = ModelFolder(tmp_path, reserved=("bob",))  # the default model's name stays the default's
    assert folder.names() == ["alice"]


def test_many_threads_get_the_model_they_ask_for_and_the_cache_stays_bounded(folder):
    """Many threads asking for models at once, with a cache smaller than the folder: every answer is the
    asked-for model's, and the cache never holds more than its size."""
    models = ModelFolder(folder, capacity=1)
    errors, sizes = [], []

    def ask(i: int) -> None:
        name = ("alice", "bob")[i % 2]
        try:
            loaded = models.get(name)
            assert loaded.name.startswith(name + "@")
            sizes.append(len(models.loaded_names()))
        except Exception as e:  # noqa: BLE001 - collected and reported below
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and max(sizes) == 1


def test_serve_command_refuses_a_models_path_that_is_not_a_folder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "digitlab.cli", "serve", "--models", str(tmp_path / "none")],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 1 and proc.stderr.startswith("digitlab: error: --models")
    assert "not a folder" in proc.stderr and "Traceback" not in proc.stderr
