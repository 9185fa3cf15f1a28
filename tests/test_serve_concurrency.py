"""Concurrent callers each get their own answer: the model shared between threads, and the service."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi.testclient import TestClient

from digitlab import reader
from digitlab.serve import ServeConfig, create_app
from serve_util import canvas, png


def test_one_model_many_threads_same_answers_as_one_thread(mnist):
    """The bug of issue 11: OnnxModel reused one input buffer, so threads got each other's answers."""
    _, (x, _) = mnist
    images = x[:400]
    model = reader.OnnxModel(reader.BUNDLED)
    alone = np.stack([model.predict_proba(im[None])[0] for im in images])
    start = threading.Barrier(8)

    def work(offset: int) -> list[tuple[int, np.ndarray]]:
        start.wait()
        order = np.roll(np.arange(len(images)), offset * 50)  # every thread on different digits at each moment
        return [(int(i), model.predict_proba(images[i][None])[0]) for i in order]

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(work, range(8)) for r in batch]
    assert len(results) == 8 * 400
    wrong = sum(not np.array_equal(p, alone[i]) for i, p in results)
    assert wrong == 0, f"{wrong} of {len(results)} answers differ from the single-threaded ones"


def test_service_concurrent_clients_each_get_their_own_answer(mnist, tmp_path):
    _, (x, y) = mnist
    pick = np.concatenate([np.flatnonzero(y == c)[:5] for c in range(10)])  # 5 of each digit
    bodies = [png(canvas(x[i])) for i in pick]
    with TestClient(create_app(ServeConfig(feedback_db=str(tmp_path / "fb.sqlite3"), max_concurrent=4))) as client:
        for _ in range(200):
            if client.get("/readyz").status_code == 200:
                break
            time.sleep(0.02)

        def ask(body: bytes) -> tuple:
            r = client.post("/v1/predict", content=body, headers={"content-type": "image/png"})
            assert r.status_code == 200, r.text
            a = r.json()
            return a["label"], a["confidence"], tuple(a["probabilities"] or ())

        alone = [ask(b) for b in bodies]
        with ThreadPoolExecutor(12) as pool:
            together = list(pool.map(ask, bodies * 2))
    assert together == alone * 2
    assert len({a[0] for a in alone}) == 10  # the digits really differ


def test_micro_batcher_merges_calls_keeps_answers_and_never_delays_a_lone_request(mnist):
    from digitlab.serve.batching import MicroBatcher

    _, (x, _) = mnist
    model = reader.OnnxModel(reader.BUNDLED)
    batcher = MicroBatcher(model, max_wait=0.5)
    with batcher.working():  # alone: no one else is being worked on, so no wait
        start = time.perf_counter()
        alone = batcher.predict_proba(x[0][None])
        assert time.perf_counter() - start < 0.25 and np.array_equal(alone, model.predict_proba(x[0][None]))
    ready = threading.Barrier(8)

    def one(i: int) -> np.ndarray:
        with batcher.working():
            ready.wait()
            return batcher.predict_proba(x[i:i + 1 + i % 2])  # one or two images per call

    calls = batcher.calls
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(one, range(8)))
    assert batcher.calls - calls < 8  # merged
    for i, p in enumerate(got):  # each caller gets its own rows, as the model alone gives them
        assert np.allclose(p, model.predict_proba(x[i:i + 1 + i % 2]), atol=1e-6)


def test_micro_batcher_hands_a_failure_to_every_caller():
    from digitlab.serve.batching import MicroBatcher

    class Broken:
        def predict_proba(self, images):
            raise RuntimeError("boom")

    batcher = MicroBatcher(Broken(), max_wait=0.2)
    ready = threading.Barrier(4)

    def one(_: int) -> str:
        with batcher.working():
            ready.wait()
            try:
                batcher.predict_proba(np.zeros((1, 28, 28), np.uint8))
            except RuntimeError as e:
                return str(e)
            return "no error"

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, range(4))) == ["boom"] * 4
