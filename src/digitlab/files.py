"""Atomic file writes: a file is either fully written or not there at all.

Every file digitlab writes goes through here: the bytes go to a temporary name in the same folder,
are flushed to disk, and the temporary file is renamed over the real name (atomic on POSIX), so a
crash or a kill never leaves a half-written file under the real name. New files get the usual
permissions (0o666 less the umask), like any file a program opens for writing.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new file beside the target, opened for writing. Unlike mkstemp (always 0600), the mode is
    0o666 and the kernel applies the process's umask, exactly as for open(path, "w")."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # a 48-bit name collision: practically never, but never overwrite
            continue


def fsync_dir(folder: str | os.PathLike) -> None:
    """Makes a rename in `folder` durable (best effort: not every OS or file system allows it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
