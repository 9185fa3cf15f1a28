"""Corrections in SQLite: stored through the API, durable across kill -9, safe with concurrent writers,
migrated from older schemas, exported as a labelled image folder."""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from digitlab.serve import ServeConfig, create_app, feedback
from serve_util import REPO, Server, canvas, png


def wait_ready(client: TestClient) -> None:
    for _ in range(300):
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise TimeoutError(client.get("/readyz").json())


def test_feedback_api_stores_corrections(tmp_path, mnist):
    _, (x, _) = mnist
    db = tmp_path / "fb.sqlite3"
    with TestClient(create_app(ServeConfig(feedback_db=str(db)))) as client:
        wait_ready(client)
        r = client.post("/v1/feedback", files={"image": ("d.png", png(canvas(x[0])), "image/png")},
                        data={"label": "1", "predicted": "7", "user": "ana"})
        assert r.status_code == 201 and r.json() == {"id": 1, "label": 1, "stored": True}
        r = client.post("/v1/feedback", json={"pixels": x[1].tolist(), "label": 2, "user": "app-42"})
        assert r.status_code == 201 and r.json()["id"] == 2
        for kwargs, status in [
            (dict(files={"image": ("d.png", png(x[0]), "image/png")}, data={"label": "12"}), 422),
            (dict(files={"image": ("d.png", png(x[0]), "image/png")}, data={"label": "seven"}), 422),
            (dict(files={"image": ("d.png", png(x[0]), "image/png")}), 422),  # no label
            (dict(files={"image": ("d.png", b"junk", "image/png")}, data={"label": "1"}), 400),
            (dict(files={"image": ("d.png", png(x[0])[:60], "image/png")}, data={"label": "1"}), 400),  # truncated
            (dict(json={"pixels": x[1].tolist()}), 422),
            (dict(content=png(x[0]), headers={"content-type": "image/png"}), 415),
            (dict(files={"image": ("d.png", png(np.full((200, 200), 255, np.uint8)), "image/png")},
                  data={"label": "1"}), 422),  # blank: nothing to learn from
        ]:
            r = client.post("/v1/feedback", **kwargs)
            assert r.status_code == status and set(r.json()) == {"error", "detail"}, (kwargs.get("data"), r.json())
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("PRAGMA user_version").fetchone()[0] == feedback.SCHEMA_VERSION
    rows = con.execute("SELECT label, predicted, user, media_type FROM feedback ORDER BY id").fetchall()
    assert rows == [(1, 7, "ana", "image/png"), (2, None, "app-42", "image/png")]


def test_migration_from_schema_1_keeps_the_data(tmp_path):
    db = tmp_path / "old.sqlite3"
    con = sqlite3.connect(db)
    con.execute(feedback.MIGRATIONS[0])
    con.execute("INSERT INTO feedback (created, label, media_type, image) VALUES (1.0, 3, 'image/png', x'00')")
    con.execute("PRAGMA user_version=1")
    con.commit()
    con.close()
    new = feedback.connect(db)
    assert new.execute("PRAGMA user_version").fetchone()[0] == feedback.SCHEMA_VERSION
    assert new.execute("SELECT label FROM feedback").fetchall() == [(3,)]
    assert new.execute("SELECT name FROM sqlite_master WHERE type='index'").fetchall() == [("feedback_label",)]
    new.execute("PRAGMA user_version=99")
    new.close()
    with pytest.raises(Exception, match="newer than this digitlab"):
        feedback.connect(db)


def _writer(db: str, label: int, n: int) -> None:
    con = feedback.connect(db)
    for _ in range(n):
        feedback.add(con, png(np.full((28, 28), label * 20, np.uint8)), "image/png", label, user=f"p{label}")
    con.close()


def test_concurrent_writers_lose_nothing(tmp_path):
    """3 processes and 3 threads write at once: every acknowledged row is there, ids unique."""
    db = str(tmp_path / "fb.sqlite3")
    feedback.connect(db).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, label, 25)) for label in range(3)]
    threads = [threading.Thread(target=_writer, args=(db, label, 25)) for label in range(3, 6)]
    for w in procs + threads:
        w.start()
    for w in procs + threads:
        w.join(timeout=120)
    assert all(p.exitcode == 0 for p in procs)
    con = sqlite3.connect(db)
    counts = dict(con.execute("SELECT label, COUNT(*) FROM feedback GROUP BY label").fetchall())
    assert counts == {label: 25 for label in range(6)}
    assert con.execute("SELECT COUNT(DISTINCT id) FROM feedback").fetchone()[0] == 150
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_acknowledged_corrections_survive_kill_9_of_the_server(tmp_path, mnist):
    _, (x, y) = mnist
    db = tmp_path / "fb.sqlite3"
    server = Server("--feedback-db", str(db), "--workers", "1").__enter__()  # the process that is killed writes
    acknowledged = []
    try:
        stop = threading.Event()

        def post(i: int) -> None:
            while not stop.is_set() and i < 400:
                try:
                    r = httpx.post(server.url + "/v1/feedback", files={"image": ("d.png", png(x[i]), "image/png")},
                                   data={"label": str(y[i])}, timeout=10)
                except httpx.HTTPError:
                    return  # the server died under us: this one was never acknowledged
                if r.status_code == 201:
                    acknowledged.append((r.json()["id"], int(y[i])))
                i += 4

        threads = [threading.Thread(target=post, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        os.kill(server.proc.pid, signal.SIGKILL)  # mid-write, no shutdown of any kind
        stop.set()
        for t in threads:
            t.join()
    finally:
        server.stop()
    assert len(acknowledged) >= 10
    con = sqlite3.connect(db)  # recovers the WAL like any reader after a crash
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored = dict(con.execute("SELECT id, label FROM feedback").fetchall())
    missing = [(i, label) for i, label in acknowledged if stored.get(i) != label]
    assert not missing, f"{len(missing)} acknowledged corrections lost"


def test_feedback_export_command(tmp_path, mnist):
    _, (x, y) = mnist
    db = tmp_path / "fb.sqlite3"
    con = feedback.connect(db)
    for i in range(6):
        feedback.add(con, png(canvas(x[i])), "image/png", int(y[i]))
    jpeg = tmp_path / "j.jpg"
    Image.fromarray(canvas(x[6])).save(jpeg)
    feedback.add(con, jpeg.read_bytes(), "image/jpeg", int(y[6]))
    con.close()
    out = tmp_path / "export"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-m", "digitlab.cli", "feedback", "export", str(out), "--db", str(db)],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("7 corrections")
    files = sorted(out.glob("*/*.png"))
    assert len(files) == 7
    assert sorted(int(f.parent.name) for f in files) == sorted(int(v) for v in y[:7])
    assert all(Image.open(f).format == "PNG" for f in files)
    proc = subprocess.run([sys.executable, "-m", "digitlab.cli", "feedback", "export", str(out), "--db",
                           str(tmp_path / "none.sqlite3")], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1 and proc.stderr.startswith("digitlab: error:") and "no feedback database" in proc.stderr


def noise_png(side: int, seed: int) -> bytes:
    """A large photo of random noise: incompressible, so the PNG is about side x side x 3 bytes."""
    return png(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8))


def test_fifty_large_noise_posts_leave_the_database_small_and_out_of_export(tmp_path, mnist):
    """The issue's attack: large noise photos labelled 3. What is stored is the 28x28 and a small crop,
    never the upload; the reader calls them not a digit, so they are kept apart and not exported."""
    _, (x, y) = mnist
    db = tmp_path / "fb.sqlite3"
    noise = [noise_png(900, seed) for seed in range(5)]  # 2.4 MB each
    assert min(len(n) for n in noise) > 2_000_000
    with TestClient(create_app(ServeConfig(feedback_db=str(db), feedback_per_minute=1000))) as client:
        wait_ready(client)
        answers = [client.post("/v1/feedback", files={"image": ("n.png", noise[i % 5], "image/png")},
                               data={"label": "3"}) for i in range(50)]
        assert [r.status_code for r in answers] == [201] * 50, answers[0].json()
        assert all(r.json()["kept_apart"] == "not a digit" for r in answers), answers[0].json()
        good = client.post("/v1/feedback", files={"image": ("d.png", png(canvas(x[0])), "image/png")},
                           data={"label": str(y[0])})
        assert good.status_code == 201 and "kept_apart" not in good.json()
    size = feedback.size_on_disk(db)
    assert size < 3 * 2**20, f"{size / 2**20:.1f} MB for 50 posts of {sum(map(len, noise)) * 10 / 2**20:.0f} MB"
    con = sqlite3.connect(db)
    biggest = con.execute("SELECT MAX(LENGTH(image)), MAX(LENGTH(digit)) FROM feedback").fetchone()
    assert biggest[0] < 30_000 and biggest[1] < 2_000, biggest
    digit = Image.open(io.BytesIO(con.execute("SELECT digit FROM feedback WHERE id = 51").fetchone()[0]))
    assert digit.size == (28, 28)
    counts = feedback.export(db, tmp_path / "out")
    assert counts == {int(y[0]): 1} and len(list((tmp_path / "out").glob("*/*.png"))) == 1


def test_rate_limit_quota_and_token_answer_429_507_401_with_a_reason(tmp_path, mnist):
    _, (x, y) = mnist
    image = {"image": ("d.png", png(canvas(x[0])), "image/png")}
    db = tmp_path / "fb.sqlite3"
    with TestClient(create_app(ServeConfig(feedback_db=str(db), feedback_per_minute=3))) as client:
        wait_ready(client)
        codes = [client.post("/v1/feedback", files=image, data={"label": "7"}) for _ in range(5)]
        assert [r.status_code for r in codes] == [201, 201, 201, 429, 429]
        assert codes[3].json()["error"] == "rate_limited" and int(codes[3].headers["retry-after"]) >= 1
        assert client.post("/v1/predict", files=image).status_code == 200  # reading is not rate limited
    with TestClient(create_app(ServeConfig(feedback_db=str(db), feedback_max_mb=0.01))) as client:
        wait_ready(client)
        r = client.post("/v1/feedback", files=image, data={"label": "7"})
        assert r.status_code == 507 and r.json()["error"] == "storage_full" and "MB" in r.json()["detail"]
    with TestClient(create_app(ServeConfig(feedback_db=str(tmp_path / "t.sqlite3"), feedback_token="s3"))) as client:
        wait_ready(client)
        r = client.post("/v1/feedback", files=image, data={"label": "7"})
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        r = client.post("/v1/feedback", files=image, data={"label": "7"}, headers={"authorization": "Bearer s3"})
        assert r.status_code == 201


def test_rate_limit_remembers_a_bounded_number_of_clients():
    from digitlab.serve.service import RateLimit

    limit = RateLimit(per_minute=2, clients=100)
    assert [limit.take("a"), limit.take("a")] == [0.0, 0.0] and limit.take("a") > 0
    for i in range(1000):
        limit.take(f"10.0.{i // 256}.{i % 256}")
    assert len(limit.buckets) == 100
