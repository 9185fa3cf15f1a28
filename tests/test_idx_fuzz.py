"""The IDX parser against random and mutated files: a valid array or digitlab's own error, quickly and
in bounded memory. Crashers found are kept below as explicit regression cases."""

import gzip
import struct
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from digitlab.data.idx import decode, encode
from digitlab.errors import DataError, HeaderMismatchError, TruncatedFileError

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_SECONDS = 1.0


def decode_bounded(raw: bytes) -> np.ndarray | DataError:
    """decode(), allowed to return an array or raise a DataError, in bounded time and memory:
    never more than a few times the input or the array it returns (headers claiming more allocate nothing)."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        result = decode(raw, "fuzz.idx")
    except DataError as e:
        result = e
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert elapsed < MAX_SECONDS, f"decode took {elapsed:.2f} s"
    produced = result.nbytes if isinstance(result, np.ndarray) else 0
    assert peak <= 4 * (len(raw) + produced) + (1 << 20), f"peak {peak:,} bytes for a {len(raw):,}-byte input"
    if isinstance(result, np.ndarray):
        assert result.dtype.isnative and result.size * result.itemsize == produced
    return result


def valid_idx() -> st.SearchStrategy[bytes]:
    dtypes = st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
    shapes = st.lists(st.integers(0, 6), min_size=1, max_size=4)
    return st.builds(lambda dt, shape: encode(np.arange(int(np.prod(shape)), dtype=dt).reshape(shape)), dtypes, shapes)


def mutate(data: st.DataObject, raw: bytes) -> bytes:
    """Flip, insert, delete bytes, or cut the file short, a few times."""
    b = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate", "set-header"]))
        at = data.draw(st.integers(0, max(0, len(b) - 1)))
        if op == "flip" and b:
            b[at] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            b[at:at] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and b:
            del b[at:at + data.draw(st.integers(1, 8))]
        elif op == "truncate":
            del b[at:]
        elif op == "set-header" and len(b) >= 8:  # a dimension set to an extreme value
            i = 4 + 4 * data.draw(st.integers(0, (min(len(b), 20) - 4) // 4 - 1))
            b[i:i + 4] = struct.pack(">I", data.draw(st.sampled_from([0, 1, 2**16, 2**31, 2**32 - 1])))
    return bytes(b)


@pytest.mark.hostile("idx-random-bytes")
@FUZZ
@given(st.binary(max_size=300), st.booleans())
@example(b"", False)
@example(b"\x1f\x8b", False)
def test_random_bytes(raw, behind_gzip_magic):
    decode_bounded(b"\x1f\x8b" + raw if behind_gzip_magic else raw)


@pytest.mark.hostile("idx-mutated-raw")
@FUZZ
@given(valid_idx(), st.data())
def test_mutated_raw(raw, data):
    mutated = mutate(data, raw)
    result = decode_bounded(mutated)
    if isinstance(result, np.ndarray):  # accepted: then the bytes were exactly a valid IDX file of it
        assert encode(result) == mutated
    else:
        assert "fuzz.idx" in str(result)  # the error names the file


@pytest.mark.hostile("idx-mutated-gzip")
@FUZZ
@given(valid_idx(), st.data())
def test_mutated_gzip(raw, data):
    mutated = mutate(data, gzip.compress(raw, mtime=0))
    result = decode_bounded(mutated)
    if isinstance(result, np.ndarray):  # accepted: then it inflates to exactly a valid IDX file of it
        assert gzip.decompress(mutated) == encode(result)
    else:
        assert "fuzz.idx" in str(result)


def test_valid_files_round_trip():
    a = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    for raw in (encode(a), gzip.compress(encode(a))):
        np.testing.assert_array_equal(decode_bounded(raw), a)


# ---------------------------------------------------------------------------- regression cases
@pytest.mark.hostile("idx-header-overflow")
def test_header_overflow_regression():
    raw = bytes([0, 0, 8, 4]) + struct.pack(">4I", 65536, 65536, 65536, 65536)  # 2^64 bytes: int64 wraps to 0
    for data in (raw, gzip.compress(raw)):
        with pytest.raises(HeaderMismatchError, match="header says 65536x65536x65536x65536"):
            decode(data, "overflow.idx")


@pytest.mark.hostile("idx-header-overflow")
def test_empty_array_with_overflowing_sides_regression():
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 2499805184, 3690987520, 0)  # 0 bytes, but no numpy shape
    with pytest.raises(HeaderMismatchError, match="not a valid array"):
        decode(raw, "empty.idx")
    assert decode(bytes([0, 0, 8, 3]) + struct.pack(">3I", 0, 28, 28), "none.idx").shape == (0, 28, 28)


@pytest.mark.hostile("idx-huge-header")
def test_huge_header():
    raw = bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**9, 28, 28) + bytes(784)
    for data in (raw, gzip.compress(raw)):
        assert isinstance(decode_bounded(data), HeaderMismatchError)


@pytest.mark.hostile("idx-gzip-bomb")
def test_gzip_bomb_inflates_no_more_than_promised():
    bomb = gzip.compress(bytes([0, 0, 8, 1]) + struct.pack(">I", 2) + bytes(100 * 2**20), mtime=0)
    assert len(bomb) < 200_000
    # trailer consistent with the header, so the parser does not bail out early on the size field
    consistent = bomb[:-4] + (10).to_bytes(4, "little")
    for data in (bomb, consistent):
        assert isinstance(decode_bounded(data), DataError)


@pytest.mark.hostile("idx-zero-byte")
def test_zero_byte_file():
    with pytest.raises(TruncatedFileError):
        decode(b"", "empty.idx")
