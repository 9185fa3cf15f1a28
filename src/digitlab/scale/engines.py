"""The two ways a list of shards gets answered: worker processes on this machine, or Ray Data.

Both answer with `read_commands.answer_chunk`, the function behind `digitlab predict --json`, so a
record here is the record predict prints for the same input. Both yield (shard, records) as each
shard completes; the caller commits the partition, its records in input order (a Parquet shard's
row order, or the order the loose files were given in).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Iterator

from digitlab import reader
from digitlab.cli.read_commands import (
    CHUNK,
    PARALLEL_MIN,
    PredictOptions,
    _answer_in_worker,
    _init_worker,
    answer_chunk,
    usable_cpus,
)
from digitlab.errors import DigitlabError, ImageError
from digitlab.scale.shards import SCALE_EXTRA, Shard, missing_image, parquet_rows, read_units

Tick = Callable[[int], None]  # told how many more inputs are answered, for the progress bar

# Ray's CPU accounting. An actor asking a whole CPU would take every CPU of a small node, and the
# read tasks (which ask for CPU too) would then wait forever ("backpressured"). Half a CPU per
# actor and a quarter per read task let both run on a 1-CPU node; each actor computes on one
# thread (the reader's ONNX session has intra_op_num_threads=1), so the real load is one core each.
ACTOR_CPUS = 0.5
READ_TASK_CPUS = 0.25
OBJECT_STORE_MB = 512  # Ray's default takes ~30% of RAM; images in flight need far less


def shard_tasks(shard: Shard) -> list[tuple[int, str, object]]:
    """(n, name, source) per input, as answer_chunk takes them: a path, image bytes, or the error."""
    if shard.path:
        return [(n, key, data if data is not None else ImageError(missing_image(key, shard)))
                for n, (key, data) in enumerate(parquet_rows(shard))]
    return [(n, name, ImageError(error) if error else path) for n, (name, path, error) in enumerate(shard.files)]


BYTES_NAME = "input bytes: "  # how reader.image.load names bytes in its errors


def named(records: list[dict]) -> list[dict]:
    """The reader names an image it got as bytes "input bytes" in its errors; a Parquet row's error
    names its key instead, as predict's error names the file (the same image read as a file and
    from a shard then has the same error, but for the name)."""
    for r in records:
        if r.get("error", "").startswith(BYTES_NAME):
            r["error"] = f"{r['file']}: {r['error'][len(BYTES_NAME):]}"
    return records


# ---------------------------------------------------------------------------- local
def local(shards: list[Shard], options: PredictOptions, jobs: int = 0, tick: Tick = lambda n: None
          ) -> Iterator[tuple[Shard, list[dict]]]:
    """Today's worker processes (one per core, each loading the model once), kept for the whole run;
    a few inputs are read in this process."""
    total = sum(s.count for s in shards)
    jobs = min(jobs or usable_cpus(), max(total, 1))
    pool = multiprocessing.Pool(jobs, initializer=_init_worker, initargs=(options,)) \
        if jobs > 1 and total >= PARALLEL_MIN else None
    if pool is None:
        model = reader.get_model(options.model)
    try:
        for shard in shards:
            tasks = shard_tasks(shard)
            chunks = [tasks[i:i + CHUNK] for i in range(0, len(tasks), CHUNK)]
            parts = pool.imap(_answer_in_worker, chunks) if pool else (answer_chunk(c, model, options) for c in chunks)
            records: list[dict] = []
            for part in parts:
                records.extend(part)
                tick(len(part))
            yield shard, named(records)
        if pool:
            pool.close()
    finally:
        if pool:
            pool.terminate()
            pool.join()


# ---------------------------------------------------------------------------- Ray
class RayReader:
    """Ray Data's callable class: one per actor, holding one model (one ONNX session, one thread)
    for every batch the actor reads. A row is an input: its image bytes (from a Parquet shard), or
    the path of a loose file (read here, from a file system every node sees), or its error."""

    def __init__(self, options: PredictOptions) -> None:
        self.model = reader.get_model(options.model)
        self.options = options

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        # a loose file has a path (its image column is empty), a Parquet row its bytes and no path
        tasks = [(int(n), str(name), ImageError(str(error)) if error else (str(path) if path else bytes(image)))
                 for n, name, path, error, image in zip(batch["n"], batch["file"], batch["path"], batch["error"],
                                                        batch["image"], strict=True)]
        records = answer_chunk(tasks, self.model, self.options)
        return {"shard": batch["shard"], "n": batch["n"],
                "json": np.array([json.dumps(r) for r in records], dtype=object)}


def reader_for(options: PredictOptions) -> type:
    """RayReader with its options built in: constructor arguments would travel through the object
    store, which Ray warns makes an actor's restart fragile."""

    class BoundReader(RayReader):
        def __init__(self) -> None:
            super().__init__(options)

    return BoundReader


def read_row_group(item: dict) -> list[dict]:
    """A read task: one row group of a Parquet shard -> its rows, as RayReader takes them."""
    shard = Shard(key=item["shard"], name=item["name"], path=item["path"], key_column=item["key_column"],
                  image_column=item["image_column"])
    rows = parquet_rows(shard, item["group"], item["start"], item["stop"])
    return [{"shard": shard.key, "n": item["first"] + i, "file": key, "path": "",
             "error": "" if data is not None else missing_image(key, shard), "image": data or b""}
            for i, (key, data) in enumerate(rows)]


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DigitlabError(f"--engine ray needs Ray: {SCALE_EXTRA}") from None
    return ray


def start_ray(address: str | None, cpus: int = 0) -> bool:
    """Connects to the cluster at `address`, or starts Ray on this machine; True if this call started
    or joined it (and so should shut it down), False if this process was already connected."""
    ray = import_ray()
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": False,
             "configure_logging": True}
    try:
        if address:
            ray.init(address=address, **quiet)
        else:
            # "local": a Ray of our own, even where another one runs on this machine (ray.init would join it)
            ray.init(address="local", num_cpus=cpus or usable_cpus(),
                     object_store_memory=OBJECT_STORE_MB * 1024 * 1024, **quiet)
    except Exception as e:  # Ray raises bare Exceptions too (a node that timed out during startup)
        ray.shutdown()  # the processes a half-done start left behind
        raise DigitlabError(f"Ray: cannot {'connect to ' + address if address else 'start'} "
                            f"({_message(e)})") from None
    if threading.current_thread() is threading.main_thread():
        # Ray's core worker takes SIGINT over at the C level: Ctrl-C then stalled the job instead of
        # stopping it. Python's handler back: Ctrl-C raises KeyboardInterrupt, the committed
        # partitions stay, and the rerun goes on from them.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return True


def _quiet_ray_data() -> None:
    """Our progress bar, not Ray Data's per-operator bars and execution logs."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    for name in ("ray", "ray.data"):  # "progress bars disabled" is a warning, and our choice
        logging.getLogger(name).setLevel(logging.ERROR)


def ray_engine(shards: list[Shard], options: PredictOptions, jobs: int = 0, tick: Tick = lambda n: None
               ) -> Iterator[tuple[Shard, list[dict]]]:
    """One Ray Data pipeline for all the shards: loose files and Parquet shards read in parallel,
    `map_batches(RayReader)` on an actor pool (one actor per CPU of the cluster, or `jobs`), answers
    streamed back here, where each shard's partition is handed over once all its answers are in.
    Ray must be started (start_ray)."""
    ray = import_ray()
    from ray.data import ActorPoolStrategy

    _quiet_ray_data()
    size = jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
    by_key = {s.key: s for s in shards}
    datasets, blocks = [], 0
    files = [{"shard": s.key, "n": n, "file": name, "path": path, "error": error, "image": b""}
             for s in shards if not s.path for n, (name, path, error) in enumerate(s.files)]
    if files:  # names only travel through the object store; the actors read the images
        blocks = max(1, min(len(files) // CHUNK, 32 * size))
        datasets.append(ray.data.from_items(files, override_num_blocks=blocks))
    # Parquet shards: the driver read only their footers; read tasks on the cluster read a piece each
    groups = [{"shard": s.key, "name": s.name, "path": s.path, "key_column": s.key_column,
               "image_column": s.image_column, "group": g, "start": start, "stop": stop, "first": first}
              for s in shards if s.path for g, start, stop, first in read_units(s)]
    if groups:
        units = ray.data.from_items(groups, override_num_blocks=len(groups))
        datasets.append(units.flat_map(read_row_group, num_cpus=READ_TASK_CPUS))
        blocks += len(groups)
    for s in shards:
        if not s.count:  # an empty Parquet shard: nothing will come back for it
            yield s, []
    if not datasets:
        return
    ds = datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]
    size = min(size, blocks)  # no more actors than pieces of input to give them
    ds = ds.map_batches(reader_for(options), batch_size=CHUNK, compute=ActorPoolStrategy(size=size),
                        num_cpus=ACTOR_CPUS, batch_format="numpy")
    waiting: dict[str, list[tuple[int, dict]]] = {s.key: [] for s in shards if s.count}
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2):
            touched = set()
            for key, n, line in zip(batch["shard"], batch["n"], batch["json"], strict=True):
                waiting[key].append((int(n), json.loads(line)))
                touched.add(key)
            tick(len(batch["json"]))
            for key in touched:
                if len(waiting[key]) == by_key[key].count:
                    yield by_key[key], named([r for _, r in sorted(waiting.pop(key), key=lambda nr: nr[0])])
    except ray.exceptions.RayError as e:
        raise DigitlabError(f"the Ray job failed: {_message(e)}") from None
    if waiting:
        raise DigitlabError(f"Ray returned fewer answers than inputs for {len(waiting)} shard(s), "
                            f"e.g. {by_key[next(iter(waiting))].name}")


def _message(error: BaseException) -> str:
    """The line of an exception that says what went wrong (Ray puts it last, after its context)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def stop_ray() -> None:
    import ray

    ray.shutdown()
