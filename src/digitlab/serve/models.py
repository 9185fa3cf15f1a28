"""Several people's models in one service: every exported model in a folder (`digitlab serve --models DIR`).

A model's name is its file's: DIR/NAME.onnx, or DIR/NAME/model.onnx (the folder `digitlab finetune
--out DIR/NAME` writes). A request picks one with `?model=NAME`; without it, the service's own model
(the bundled one, or --model) answers, as before.

Models load on first use, not at start (a folder may hold hundreds, most of them idle), and at most
`capacity` stay loaded: the least recently used is dropped first. A request holds the `Loaded` it
started with, so dropping or replacing a model never breaks a request in flight. The folder is read
at start and, with --watch, once a second: new files are found, removed ones forgotten, and a replaced
file is loaded again (while a new file fails to load, the old one keeps answering).

Thread-safe: the map and the cache change under one lock, and each model has its own loading lock, so
two requests for a model not yet loaded load it once. Loading runs off the event loop.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from digitlab import reader
from digitlab.errors import DigitlabError
from digitlab.serve.batching import MicroBatcher
from digitlab.serve.errors import ApiError

log = logging.getLogger("digitlab.serve")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # what ?model= accepts: safe in a URL and a log line


@dataclass(frozen=True)
class Loaded:
    model: object
    name: str  # "<name>@<sha256 prefix>": says exactly which file answered (the name: ?model=, or the file stem)
    path: Path
    sha256: str
    loaded_at: float
    stamp: tuple[int, int]  # (mtime_ns, size) of the file, for the file watch
    batch_wait: float = 0.0015  # seconds the first request at the network waits for others
    batcher: MicroBatcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # one batcher per loaded model: after a reload, requests in flight finish in the old one's batches
        object.__setattr__(self, "batcher", MicroBatcher(self.model, self.batch_wait))


def load_model(path: str | os.PathLike | None, batch_wait: float = 0.0015, name: str | None = None) -> Loaded:
    """Loads an ONNX model (None: the bundled one) with its card; `name` defaults to the file's stem.
    Raises digitlab's ModelError."""
    p = Path(path) if path else Path(reader.BUNDLED)
    model = reader.OnnxModel(p)  # a fresh instance: a reload must not reuse a cached one
    stat = p.stat()
    digest = hashlib.sha256(p.read_bytes()).hexdigest()
    return Loaded(model, f"{name or p.stem}@{digest[:12]}", p, digest, time.time(),
                  (stat.st_mtime_ns, stat.st_size), batch_wait)


def discover(folder: str | os.PathLike) -> dict[str, Path]:
    """NAME -> model file for every NAME.onnx and NAME/model.onnx in `folder` (a flat file wins over a
    folder of the same name); hidden files (an atomic write's temporary) and unsafe names are left out."""
    folder = Path(folder)
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*/model.onnx")) + sorted(folder.glob("*.onnx")):
        name = path.parent.name if path.name == "model.onnx" and path.parent != folder else path.stem
        if NAME.match(name) and path.is_file():
            found[name] = path
    return found


def stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


class ModelFolder:
    """The models of one folder by name, loaded lazily into a bounded LRU cache."""

    def __init__(self, folder: str | os.PathLike, capacity: int = 8, batch_wait: float = 0.0015,
                 reserved: tuple[str, ...] = ()) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DigitlabError(f"{self.folder}: no such folder (--models names a folder of exported models)")
        self.capacity, self.batch_wait, self.reserved = max(1, capacity), batch_wait, reserved
        self.lock = threading.Lock()  # guards found, cache and gates
        self.found: dict[str, Path] = {}
        self.cache: OrderedDict[str, Loaded] = OrderedDict()  # least recently used first
        self.gates: dict[str, threading.Lock] = {}  # one loader per name at a time
        self.scan()

    def names(self) -> list[str]:
        with self.lock:
            return sorted(self.found)

    def loaded_names(self) -> list[str]:
        with self.lock:
            return list(self.cache)

    def scan(self) -> list[str]:
        """Reads the folder again; returns the names whose cached model is stale (replaced files)."""
        found = {name: path for name, path in discover(self.folder).items() if name not in self.reserved}
        with self.lock:
            added = sorted(set(found) - set(self.found))
            for name in set(self.cache) - set(found):  # removed from the folder: forgotten
                del self.cache[name]
            self.found = found
            stale = []
            for name, loaded in self.cache.items():
                try:
                    if loaded.path != found[name] or stamp(found[name]) != loaded.stamp:
                        stale.append(name)
                except OSError:  # gone between the listing and now: the next scan forgets it
                    continue
        if added:
            log.info("models found in %s: %s", self.folder, ", ".join(added))
        return stale

    def cached(self, name: str) -> Loaded | None:
        """The loaded model, if it is in the cache (no I/O: safe on the event loop)."""
        with self.lock:
            loaded = self.cache.get(name)
            if loaded is not None:
                self.cache.move_to_end(name)
            return loaded

    def get(self, name: str) -> Loaded:
        """The model NAME, loaded now if it is not in the cache (blocking: call it off the event loop).
        404 for a name the folder does not hold; 503 when its file does not load."""
        with self.lock:
            path = self.found.get(name)
            if path is None:
                known = ", ".join(sorted(self.found)[:20]) or "none"
                raise ApiError(404, "unknown_model", f"no model named {name!r} in the models folder (there: {known})")
            gate = self.gates.setdefault(name, threading.Lock())
        with gate:
            loaded = self.cached(name)
            if loaded is not None and loaded.path == path:
                return loaded
            try:
                loaded = load_model(path, self.batch_wait, name)
            except Exception as e:  # noqa: BLE001 - a bad file answers its own requests with the reason
                raise ApiError(503, "model_not_loadable", f"model {name!r} failed to load: {e}") from None
            self.keep(name, loaded)
            return loaded

    def reload(self, name: str) -> Loaded | None:
        """Loads NAME's file again (the watch, after the file changed); on failure the old one stays."""
        with self.lock:
            path = self.found.get(name)
            gate = self.gates.setdefault(name, threading.Lock())
        if path is None:
            return None
        with gate:
            try:
                loaded = load_model(path, self.batch_wait, name)
            except Exception as e:  # noqa: BLE001 - a half-copied file: keep the old model, retry next time
                log.warning("model %s: reload failed, the previous one still answers: %s", name, e)
                return None
            self.keep(name, loaded)
            log.info("model reloaded: %s (%s)", loaded.name, path)
            return loaded

    def keep(self, name: str, loaded: Loaded) -> None:
        with self.lock:
            if self.found.get(name) != loaded.path:  # removed or renamed while it loaded
                return
            self.cache[name] = loaded
            self.cache.move_to_end(name)
            while len(self.cache) > self.capacity:
                dropped, _ = self.cache.popitem(last=False)
                log.info("model %s dropped from the cache (%d kept)", dropped, self.capacity)
