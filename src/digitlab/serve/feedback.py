"""Corrections people make ("wrong? it is a 7"), kept in SQLite for fine-tuning.

One real database file in WAL mode. `synchronous=FULL` makes every acknowledged write durable: the
service answers 201 only after COMMIT returned, so killing the process (or the machine) never loses
an acknowledged correction. Concurrent writers (threads, uvicorn workers, other processes) are
serialized by SQLite's own lock; `busy_timeout` makes them wait instead of failing.

What is stored is bounded in size, whatever was uploaded: the 28x28 digit the reader made of the
image (what fine-tuning learns from) and a crop around the digit reduced to at most CROP_SIDE pixels
(what a person checks), never the raw upload. Images the reader calls "not a digit" are kept apart
(`kept_apart` holds the reason) and left out of `export`, so a noise picture labelled 3 never reaches
fine-tuning.

The schema carries a version (`PRAGMA user_version`); MIGRATIONS[i] takes version i to i + 1, so an
old database file is upgraded in place when the service opens it.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from digitlab.errors import DigitlabError
from digitlab.files import atomic_write_bytes

MIGRATIONS = [
    # 0 -> 1: the corrections themselves
    """CREATE TABLE feedback (
           id INTEGER PRIMARY KEY AUTOINCREMENT,
           created REAL NOT NULL,
           label INTEGER NOT NULL CHECK (label BETWEEN 0 AND 9),
           predicted INTEGER,
           user TEXT,
           model TEXT,
           media_type TEXT NOT NULL,
           image BLOB NOT NULL
       )""",
    # 1 -> 2: export and fine-tuning select by label
    "CREATE INDEX feedback_label ON feedback (label)",
    # 2 -> 3: the 28x28 digit the reader saw (PNG); `image` holds a small crop from now on
    "ALTER TABLE feedback ADD COLUMN digit BLOB",
    # 3 -> 4: why a correction is kept apart from fine-tuning (NULL: it is not)
    "ALTER TABLE feedback ADD COLUMN kept_apart TEXT",
]
SCHEMA_VERSION = len(MIGRATIONS)


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """An open, migrated connection. One per thread: sqlite3 connections are not shared."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)  # autocommit; we BEGIN explicitly
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        migrate(db)
    except sqlite3.DatabaseError as e:
        db.close()
        raise DigitlabError(f"{path}: not a usable feedback database ({e})") from None
    return db


def migrate(db: sqlite3.Connection) -> int:
    """Brings the schema to SCHEMA_VERSION, one migration per transaction; returns the version."""
    while True:
        db.execute("BEGIN IMMEDIATE")  # one migrator at a time when several workers start together
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise DigitlabError(f"feedback database schema {version} is newer than this digitlab "
                                    f"({SCHEMA_VERSION}); upgrade digitlab")
            if version == SCHEMA_VERSION:
                db.execute("COMMIT")
                return version
            db.execute(MIGRATIONS[version])
            db.execute(f"PRAGMA user_version={version + 1}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise


def add(db: sqlite3.Connection, image: bytes, media_type: str, label: int, predicted: int | None = None,
        user: str | None = None, model: str | None = None, digit: bytes | None = None,
        kept_apart: str | None = None) -> int:
    """Stores one correction; returns its id once it is durably committed."""
    cursor = db.execute(
        "INSERT INTO feedback (created, label, predicted, user, model, media_type, image, digit, kept_apart) "
        "VALUES (?,?,?,?,?,?,?,?,?)",
        (time.time(), int(label), predicted, user, model, media_type, sqlite3.Binary(image),
         None if digit is None else sqlite3.Binary(digit), kept_apart))
    return int(cursor.lastrowid)


def rows(db: sqlite3.Connection) -> Iterator[tuple[int, int, bytes]]:
    """(id, label, image bytes) of every correction not kept apart, oldest first."""
    yield from db.execute("SELECT id, label, image FROM feedback WHERE kept_apart IS NULL ORDER BY id")


def examples(db: sqlite3.Connection, user: str | None = None) -> Iterator[tuple[int, int, bytes | None, bytes]]:
    """(id, label, 28x28 digit PNG or None, image) of every correction not kept apart, oldest first;
    only `user`'s when given. What `digitlab finetune --feedback` learns from."""
    query = "SELECT id, label, digit, image FROM feedback WHERE kept_apart IS NULL"
    yield from db.execute(query + (" AND user = ? ORDER BY id" if user is not None else " ORDER BY id"),
                          (user,) if user is not None else ())


def users(db: sqlite3.Connection) -> list[str]:
    """The users corrections name, most corrections first."""
    return [u for (u,) in db.execute("SELECT user FROM feedback WHERE user IS NOT NULL GROUP BY user "
                                     "ORDER BY COUNT(*) DESC, user")]


def kept_apart(db: sqlite3.Connection) -> int:
    """How many corrections are kept apart from fine-tuning."""
    return int(db.execute("SELECT COUNT(*) FROM feedback WHERE kept_apart IS NOT NULL").fetchone()[0])


def size_on_disk(path: str | os.PathLike) -> int:
    """Bytes of the database file and its write-ahead log (what a quota must count)."""
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(FileNotFoundError):
            total += os.path.getsize(f"{path}{suffix}")
    return total


def export(db_path: str | os.PathLike, folder: str | os.PathLike) -> dict[int, int]:
    """Writes every correction not kept apart as FOLDER/<label>/<id>.png (a labelled image folder, the
    layout `digitlab finetune --images` reads); returns the count per label. Files already there are kept."""
    if not Path(db_path).is_file():
        raise DigitlabError(f"{db_path}: no feedback database (corrections are stored by `digitlab serve`)")
    counts: dict[int, int] = {}
    db = connect(db_path)
    try:
        for row_id, label, data in rows(db):
            target = Path(folder) / str(label) / f"{row_id:06d}.png"
            if not target.exists():
                atomic_write_bytes(target, to_png(data))
            counts[label] = counts.get(label, 0) + 1
    finally:
        db.close()
    return counts


def to_png(data: bytes) -> bytes:
    """PNG bytes of a stored image (the pad sends PNGs already; photos may be JPEG or anything Pillow reads)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data
    with Image.open(io.BytesIO(data)) as image:
        buf = io.BytesIO()
        image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buf, format="PNG")
        return buf.getvalue()
