"""Input shards, their answers as Parquet partitions, and `digitlab pack`.

A shard is what one partition of the output answers: a Parquet file of images (rows: key, image
bytes), or a group of loose image files. Its key is a hash of what it holds (the file names, or the
Parquet file's path and size), so the same inputs give the same shards on every run and a rerun
finds the partitions already written.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from digitlab.errors import DigitlabError, ImageError
from digitlab.files import atomic_write_bytes, atomic_write_json, read_json

FILES_PER_SHARD = 1000  # loose files per shard: a partition per ~1,000 answers keeps a rerun's loss small
PACK_SHARD_MB = 100.0  # Parquet shards of about this much image data (the size for cluster reading)
READ_UNIT_ROWS = 256  # rows per Ray read task (and per row group of a packed shard): 8 batches of 32
KEY_COLUMNS = ("key", "file", "path")  # what names a row in an image Parquet file, in this order
IMAGE_COLUMN = "image"
MANIFEST = "_digitlab.json"  # the options the answers were made with; "_" so Parquet readers skip it
SCALE_EXTRA = 'pip install "digitlab[scale]"'  # the words of digitlab.extras


def require_pyarrow():
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet as pq
    except ImportError:
        raise DigitlabError(f"Parquet needs pyarrow: {SCALE_EXTRA}") from None
    return pq


@dataclass
class Shard:
    """One unit of work. `files`: (name as given, absolute path or "", error or "") per loose input;
    `path`: a Parquet file of images, with its key and image columns and row count."""

    key: str
    name: str  # what the output's `shard` column says
    files: list[tuple[str, str, str]] = field(default_factory=list)
    path: str = ""
    key_column: str = ""
    image_column: str = ""
    rows: int = 0
    row_groups: list[int] = field(default_factory=list)  # rows per row group: the unit a read task reads

    @property
    def count(self) -> int:
        return self.rows if self.path else len(self.files)


def _digest(*parts: str) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def is_parquet_path(path: str) -> bool:
    return path.lower().endswith((".parquet", ".pq"))


def expand(paths: Iterable[str]) -> list[str]:
    """Arguments -> paths: "@LIST" is a text file of paths (one per line), a glob pattern expands
    (`**` recursing) in sorted order; anything else is taken as given. A pattern matching nothing is
    kept, so that it is answered as a missing file rather than dropped in silence."""
    out: list[str] = []
    for p in paths:
        if p == "-":
            raise DigitlabError("stdin (-) cannot be written to Parquet; give files, folders or shards")
        if p.startswith("@"):
            try:
                lines = Path(p[1:]).read_text(encoding="utf-8").splitlines()
            except OSError as e:
                raise DigitlabError(f"{p}: cannot read the list of paths ({e.strerror})") from None
            out.extend(expand(line.strip() for line in lines if line.strip() and not line.startswith("#")))
        elif glob.has_magic(p) and not Path(p).exists():
            out.extend(sorted(glob.glob(p, recursive=True)) or [p])
        else:
            out.append(p)
    return out


def plan(paths: Iterable[str], files_per_shard: int = FILES_PER_SHARD, key_column: str | None = None,
         image_column: str | None = None) -> list[Shard]:
    """The shards of these inputs: every Parquet file is one; loose images (files, folders' images)
    are grouped, in order, into shards of `files_per_shard`. A folder with no images and no Parquet
    files is one failed input, as for `digitlab predict`."""
    from digitlab.cli.read_commands import predict_inputs  # one definition of what a folder's images are

    if files_per_shard < 1:
        raise DigitlabError(f"--shard-size {files_per_shard}: must be at least 1")
    parquet: list[str] = []
    loose: list[str] = []
    for p in expand(paths):
        if Path(p).is_dir():
            found = sorted(str(f) for f in Path(p).rglob("*") if f.is_file() and is_parquet_path(f.name))
            parquet.extend(found)
            from digitlab.data import image_files

            if image_files(p) or not found:
                loose.append(p)
        elif is_parquet_path(p) and Path(p).is_file():
            parquet.append(p)
        else:
            loose.append(p)
    files = [(name, str(Path(src).resolve()) if isinstance(src, str) else "", str(src) if not isinstance(src, str)
              else "") for name, src in predict_inputs(loose)]
    shards = []
    for start in range(0, len(files), files_per_shard):
        group = files[start:start + files_per_shard]
        names = [name for name, _, _ in group]
        shards.append(Shard(key=_digest("files", *names), name=f"{names[0]} .. {names[-1]} ({len(names)} files)"
                            if len(names) > 1 else names[0], files=group))
    shards.extend(parquet_shard(p, key_column, image_column) for p in dict.fromkeys(parquet))
    return shards


def parquet_shard(path: str, key_column: str | None = None, image_column: str | None = None) -> Shard:
    """A Parquet file of images as a shard: finds its key and image-bytes columns (or checks the ones
    given) and its row count from the footer, without reading the images."""
    pq = require_pyarrow()
    import pyarrow as pa

    try:
        meta = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise DigitlabError(f"{path}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    schema = meta.schema_arrow
    binary = [f.name for f in schema if pa.types.is_binary(f.type) or pa.types.is_large_binary(f.type)]
    default = IMAGE_COLUMN if IMAGE_COLUMN in schema.names else (binary[0] if len(binary) == 1 else None)
    image = image_column or default
    if image not in binary:
        raise DigitlabError(f"{path}: no image-bytes column {image_column or IMAGE_COLUMN!r} "
                            f"(binary columns: {', '.join(binary) or 'none'}); name it with --image-column")
    key = key_column or next((k for k in KEY_COLUMNS if k in schema.names), None)
    if key not in schema.names:
        raise DigitlabError(f"{path}: no key column ({key_column or ', '.join(KEY_COLUMNS)}) naming each image; "
                            f"name it with --key-column")
    resolved = str(Path(path).resolve())
    groups = [meta.metadata.row_group(i).num_rows for i in range(meta.metadata.num_row_groups)]
    return Shard(key=_digest("parquet", resolved, str(os.path.getsize(path))), name=path, path=resolved,
                 key_column=key, image_column=image, rows=meta.metadata.num_rows, row_groups=groups)


def parquet_rows(shard: Shard, group: int | None = None, start: int = 0, stop: int | None = None
                 ) -> list[tuple[str, bytes | None]]:
    """(key, image bytes) of the rows of a Parquet shard, or of rows start:stop of one of its row
    groups, in order (a null image stays None)."""
    pq = require_pyarrow()
    columns = [shard.key_column, shard.image_column]
    if group is None:
        table = pq.read_table(shard.path, columns=columns)
    else:
        table = pq.ParquetFile(shard.path).read_row_group(group, columns=columns)
        table = table.slice(start, (stop if stop is not None else table.num_rows) - start)
    return list(zip((str(k) for k in table.column(0).to_pylist()), table.column(1).to_pylist(), strict=True))


def read_units(shard: Shard) -> list[tuple[int, int, int, int]]:
    """(row group, start, stop, index of its first row in the shard): the pieces a Parquet shard is
    read in on a cluster, of at most READ_UNIT_ROWS rows. A bigger row group (a Parquet file not made
    by `pack`) is read once per piece: more I/O, but all actors busy."""
    units, first = [], 0
    for group, rows in enumerate(shard.row_groups):
        for start in range(0, rows, READ_UNIT_ROWS):
            units.append((group, start, min(rows, start + READ_UNIT_ROWS), first + start))
        first += rows
    return units


def missing_image(key: str, shard: Shard) -> str:
    return f"{key}: no image bytes in {shard.name}"


# ---------------------------------------------------------------------------- the output
def _schema():
    import pyarrow as pa

    box = pa.list_(pa.int64())
    return pa.schema([
        ("file", pa.string()), ("shard", pa.string()), ("label", pa.int64()), ("confidence", pa.float64()),
        ("status", pa.string()), ("probabilities", pa.list_(pa.float64())), ("box", box), ("text", pa.string()),
        ("doubt", pa.string()),
        ("digits", pa.list_(pa.struct([("label", pa.int64()), ("confidence", pa.float64()), ("box", box)]))),
        ("hint", pa.string()), ("error", pa.string()),
        ("json", pa.string()),  # the record exactly as `digitlab predict --json` prints it
    ])


def records_table(records: list[dict], shard: str):
    """Answers (predict's records) -> a Parquet table: every column is the record's field of that name
    (null where the record has none), plus the shard and the record's JSON line."""
    import pyarrow as pa

    schema = _schema()
    columns = {name: [r.get(name) for r in records] for name in schema.names}
    columns["shard"] = [shard] * len(records)
    columns["json"] = [json.dumps(r) for r in records]
    return pa.table(columns, schema=schema)


class Results:
    """The output folder (`--out results.parquet`): one `part-<shard key>.parquet` per finished shard,
    and `_digitlab.json` with the options the answers depend on, so that a rerun with other options
    (--multi, another model) cannot mix its answers with these."""

    def __init__(self, out: str | os.PathLike, options: dict) -> None:
        require_pyarrow()
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise DigitlabError(f"--out {out}: a file is there; Parquet results are a folder of partitions, "
                                f"give a new name")
        self.out.mkdir(parents=True, exist_ok=True)
        manifest = self.out / MANIFEST
        if manifest.is_file():
            try:
                earlier = read_json(manifest).get("options")
            except (ValueError, AttributeError):
                earlier = None
            if earlier != options:
                raise DigitlabError(f"--out {out}: holds answers made with other options ({earlier}); "
                                    f"use another --out, or remove it")
        else:
            atomic_write_json(manifest, {"options": options})
        # temporary files of partitions a killed run was writing: never read (the "." hides them), removed
        for stale in self.out.glob(".part-*.tmp"):
            stale.unlink(missing_ok=True)

    def partition(self, shard: Shard) -> Path:
        return self.out / f"part-{shard.key}.parquet"

    def done(self, shard: Shard) -> bool:
        return self.partition(shard).is_file()

    def commit(self, shard: Shard, records: list[dict]) -> Path:
        """Writes a shard's answers, all at once: a temporary file renamed into place."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(records_table(records, shard.name), sink, compression="zstd")
        return atomic_write_bytes(self.partition(shard), sink.getvalue().to_pybytes())


def read_results(out: str | os.PathLike) -> list[dict]:
    """Every row of a results folder as a dict (tests, small outputs)."""
    pq = require_pyarrow()
    return pq.read_table(str(out)).to_pylist()


# ---------------------------------------------------------------------------- pack
def pack(folder: str | os.PathLike, out: str | os.PathLike, shard_mb: float = PACK_SHARD_MB) -> list[Path]:
    """A folder of images -> Parquet shards `OUT/images-00000.parquet`, ... of about `shard_mb` MB of
    image bytes each, rows (key: the path under FOLDER, image: the file's bytes) in the folder's
    order. Images are stored as they are, not decoded: a damaged one is found (and answered with its
    error) when the shards are read. Each shard is written atomically."""
    pq = require_pyarrow()
    import pyarrow as pa

    from digitlab.data import image_files

    root = Path(folder)
    if not root.is_dir():
        raise DigitlabError(f"{folder}: not a folder")
    if shard_mb <= 0:
        raise DigitlabError(f"--shard-mb {shard_mb}: must be positive")
    files = image_files(root)
    if not files:
        raise DigitlabError(f"{folder}: no images in this folder")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DigitlabError(f"--out {out}: a file is there; give a folder")
    if out.is_dir() and any(out.glob("images-*.parquet")):
        raise DigitlabError(f"--out {out}: already holds shards; give an empty or new folder")
    written: list[Path] = []

    def flush(keys: list[str], blobs: list[bytes]) -> None:
        table = pa.table({"key": pa.array(keys, pa.string()), "image": pa.array(blobs, pa.binary())})
        sink = pa.BufferOutputStream()
        # images are compressed already. A row group is what a Ray read task reads, and a block goes to
        # one actor: groups of READ_UNIT_ROWS spread a shard over the cluster's actors.
        pq.write_table(table, sink, compression="none", row_group_size=READ_UNIT_ROWS)
        written.append(atomic_write_bytes(out / f"images-{len(written):05d}.parquet", sink.getvalue().to_pybytes()))

    for keys, blobs in _groups(root, files, int(shard_mb * 1024 * 1024)):
        flush(keys, blobs)
    return written


def _groups(root: Path, files: list[Path], limit: int) -> Iterator[tuple[list[str], list[bytes]]]:
    keys: list[str] = []
    blobs: list[bytes] = []
    size = 0
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as e:
            raise ImageError(f"{f}: cannot read ({e.strerror})") from None
        keys.append(f.relative_to(root).as_posix())
        blobs.append(data)
        size += len(data)
        if size >= limit:
            yield keys, blobs
            keys, blobs, size = [], [], 0
    if keys:
        yield keys, blobs
