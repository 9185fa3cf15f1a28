"""The IDX file format of MNIST (http://yann.lecun.com/exdb/mnist/), gzip-compressed or raw.

Header: two zero bytes, a dtype code, the number of dimensions, then one big-endian uint32 per
dimension. Everything is validated against the header before the payload is trusted, so a file
that claims 10^9 images fails with a clear error instead of an enormous allocation.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

from digitlab.errors import BadMagicError, CorruptFileError, HeaderMismatchError, TruncatedFileError
from digitlab.files import atomic_write_bytes

DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES = {dt.newbyteorder(">") if dt.itemsize > 1 else dt: code for code, dt in DTYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"


def parse_header(head: bytes, name: str) -> tuple[np.dtype, tuple[int, ...], int]:
    """Returns (dtype, shape, header length) from the first bytes of an IDX payload."""
    if len(head) < 4:
        raise TruncatedFileError(f"{name}: file too short for an IDX header ({len(head)} bytes)")
    zero, code, ndim = head[:2], head[2], head[3]
    if zero != b"\0\0" or code not in DTYPES or not 1 <= ndim <= 4:
        magic = int.from_bytes(head[:4], "big")
        raise BadMagicError(f"{name}: wrong magic number {magic:#010x}, not an IDX file")
    header_len = 4 + 4 * ndim
    if len(head) < header_len:
        raise TruncatedFileError(f"{name}: file ends inside the IDX header")
    shape = struct.unpack(f">{ndim}I", head[4:header_len])
    return DTYPES[code], tuple(shape), header_len


def payload_size(dtype: np.dtype, shape: tuple[int, ...], header_len: int) -> int:
    """Bytes the header promises. Python ints: np.prod in int64 wraps around for four dimensions of
    65,536 (2^64 -> 0), which let a 20-byte file pass the size check and crash in reshape (a
    regression case in tests/test_idx_fuzz.py)."""
    return header_len + math.prod(shape) * dtype.itemsize


def decode(raw: bytes, name: str) -> np.ndarray:
    """Decodes the bytes of an IDX file (gzip or not) into an array in native byte order."""
    if raw[:2] == GZIP_MAGIC:
        payload = gunzip(raw, name)
    else:
        payload = raw
    dtype, shape, header_len = parse_header(payload[:20], name)
    expected = payload_size(dtype, shape, header_len)
    if len(payload) != expected:
        raise HeaderMismatchError(
            f"{name}: header says {'x'.join(map(str, shape))} {dtype.name} "
            f"({expected:,} bytes) but the payload holds {len(payload):,} bytes"
        )
    try:
        array = np.frombuffer(payload, dtype=dtype, offset=header_len).reshape(shape)
    except ValueError:  # an empty array whose other sides overflow numpy's size (0 x 2^31 x 2^31)
        raise HeaderMismatchError(f"{name}: header's shape {'x'.join(map(str, shape))} is not a valid array") from None
    return array.astype(dtype.newbyteorder("="), copy=True)


def gunzip(raw: bytes, name: str) -> bytes:
    """Decompresses, first checking the header's claimed size against gzip's own size field, and
    never inflating more than the header promises (so a gzip bomb costs nothing)."""
    # The gzip trailer stores the payload length mod 2^32: compare it with what the IDX header
    # claims before inflating anything, so an absurd header fails fast and allocates nothing.
    d = zlib.decompressobj(wbits=31)
    try:
        head = d.decompress(raw, 20)
        dtype, shape, header_len = parse_header(head, name)
        expected = payload_size(dtype, shape, header_len)
        trailer_size = int.from_bytes(raw[-4:], "little") if len(raw) >= 18 else -1
        # at most one byte more than promised: enough to tell "longer" from "exact" (0 means unlimited to zlib)
        room = min(max(expected + 1 - len(head), 1), sys.maxsize)
        if trailer_size != expected % 2**32:
            # Either the header lies or the file is cut short; inflate (bounded) to tell which.
            body = d.decompress(d.unconsumed_tail, room)
            if not d.eof and len(head) + len(body) <= expected:
                raise TruncatedFileError(f"{name}: truncated gzip stream (file cut short?)")
            held = f"{len(head) + len(body):,} bytes" if d.eof else "more"
            raise HeaderMismatchError(f"{name}: header says {'x'.join(map(str, shape))} ({expected:,} bytes) "
                                      f"but the gzip payload holds {held}")
        body = d.decompress(d.unconsumed_tail, room)
    except zlib.error as e:
        raise CorruptFileError(f"{name}: corrupt gzip data ({e})") from None
    if len(head) + len(body) > expected:  # the stream outgrows its own trailer's size field
        raise CorruptFileError(f"{name}: corrupt gzip data (longer than its size field, {expected:,} bytes)")
    if not d.eof:
        raise TruncatedFileError(f"{name}: truncated gzip stream (file cut short?)")
    return head + body


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (`.gz` or raw) into a numpy array, validating it fully."""
    path = Path(path)
    return decode(path.read_bytes(), path.name)


def encode(array: np.ndarray) -> bytes:
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    if dtype not in CODES:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    header = bytes([0, 0, CODES[dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=dtype).tobytes()


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Writes an array as IDX, gzip-compressed when the name ends in `.gz`; atomically."""
    data = encode(np.asarray(array))
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    return atomic_write_bytes(path, data)
