"""The hostile cases digitlab is tested against: one registry, from which RELIABILITY.md is generated.

Each `Case` says what is thrown at digitlab and the only outcome allowed. A test claims the cases it
checks in one of two ways, and `scripts/reliability_table.py` runs those tests and writes each
case's outcome into RELIABILITY.md:

    @pytest.mark.hostile("cli-min-confidence-range")          # one test, one or more case ids
    def test_min_confidence_out_of_range(...): ...

    @pytest.mark.parametrize("case", hostile.area("idx"), ids=hostile.case_id)
    def test_idx_case(case): ...                                # a parameter named `case` claims it

Adding cases (any helper, any area): append `Case(...)`s to your area's list below (or start a new
list and add it to CASES), claim each from a test as above, then run
`python scripts/reliability_table.py`. Ids are unique, lower-case, `area-what`;
tests/test_reliability.py fails when an id is reused, unclaimed, or missing from RELIABILITY.md.

Image inputs are data with their builders: IMAGE_INPUTS = [(name, builder, expected), ...], where
`builder()` returns what a user would pass (file bytes or a numpy array) and `expected` is "error"
(a one-line digitlab ImageError, nothing else), "result" (an answer: a digit, or "no digit"),
"result or error" (either, never anything else) or a digit "0"-"9" (that answer).
tests/test_image.py runs every one through `digitlab.classify` with a time limit (each is the
registry case `image_case_id(name)`). Crashers found by the fuzz tests are added there as regression cases.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from digitlab.reader.image import MAX_BYTES

from .corpus import drawn_digit


@dataclass(frozen=True)
class Case:
    id: str  # unique and stable: "area-what"
    area: str  # cli, idx, files, image, http, model, training ...
    tried: str  # what is thrown at digitlab, as a user would describe it
    expected: str  # the only outcome allowed


def _cases(area: str, *rows: tuple[str, str, str]) -> list[Case]:
    return [Case(f"{area}-{what}", area, tried, expected) for what, tried, expected in rows]


CLI_CASES = _cases(
    "cli",
    ("min-confidence-range", "`predict --min-confidence 1.5` (and -0.1, nan)",
     "usage error naming the allowed range, exit 2, nothing on stdout"),
    ("empty-folder", "`predict emptydir` (a folder with no images)",
     "one line 'no images' on stdout/err, exit 1"),
    ("missing-file", "`predict` on a path that does not exist, among good inputs",
     "one error line for it, the others answered, exit 1"),
    ("not-an-image", "`predict` on a text file with a .png name, among good inputs",
     "one error line for it, the others answered, exit 1"),
    ("broken-pipe", "`predict FOLDER | head -n 1`",
     "quiet exit: nothing on stderr (no 'Broken pipe' message, no traceback)"),
    ("several-digits", "an image holding several digits read without --multi",
     "the answer plus a hint that it looks like several digits (try --multi)"),
    ("explain-no-digit", "`--explain DIR` on a blank image",
     "'no digit', and DIR still gets a PNG of what the reader saw"),
    ("resume-after-kill", "`predict FOLDER --out results.jsonl` killed (SIGKILL) mid-run, then rerun",
     "every input answered exactly once, earlier answers not redone"),
    ("resume-after-partial-line", "results journal ending in a half-written line (killed inside a write)",
     "the broken line is dropped and that input answered again, exactly once"),
    ("progress-not-on-stdout", "a progress bar forced on while stdout is piped",
     "stdout holds only answers; the bar goes to stderr"),
    ("parallel-order", "a folder predicted over worker processes",
     "answers in the same order and identical to a single process"),
    ("export-worse-bundle", "`export --bundle` with a model less accurate than the shipped one",
     "refused with both accuracies named, shipped model untouched; --force overrides"),
)

IDX_CASES = _cases(
    "idx",
    ("random-bytes", "random bytes (raw, and behind a gzip magic) as an IDX file",
     "a DataError (or, rarely, a valid array), within 1 s and bounded memory"),
    ("mutated-raw", "valid IDX files with bytes flipped, inserted, deleted, or cut short",
     "an array matching the header or a DataError, within 1 s and bounded memory"),
    ("mutated-gzip", "valid gzipped IDX files with bytes flipped, inserted, deleted, or cut short",
     "an array matching the header or a DataError, within 1 s and bounded memory"),
    ("header-overflow", "a 20-byte file whose header claims 65536^4 bytes (2^64: int64 wraps to 0)",
     "HeaderMismatchError (was a ValueError from reshape)"),
    ("huge-header", "a header claiming 10^9 images of 28x28",
     "HeaderMismatchError at once, nothing large allocated"),
    ("gzip-bomb", "a 100 kB gzip inflating to 100 MB behind a header claiming 10 bytes",
     "an error after inflating at most what the header promises"),
    ("zero-byte", "an empty file", "TruncatedFileError"),
)

FILES_CASES = _cases(
    "files",
    ("umask", "files written under umask 022 and 077",
     "modes 0644 and 0600 (0o666 less the umask), never a fixed 0600"),
    ("crash-mid-write", "an exception while the bytes are written",
     "the previous file intact under the real name, no temporary file left"),
)

# ---------------------------------------------------------------------------- image inputs (the reader's)
def _digit_gray(size: int = 120, digit: int = 7) -> np.ndarray:
    ink = drawn_digit(digit, size, np.random.default_rng(digit), width=0.1)
    return ((1 - ink) * 255 + 0.5).astype(np.uint8)  # dark pen on white


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A ~100-byte PNG whose header claims width x height 8-bit grey pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def gif_bomb() -> bytes:
    """A tiny GIF whose logical screen and frame claim 65535 x 65535 pixels."""
    data = bytearray(_encode(Image.new("L", (8, 8), 255).convert("P"), "GIF"))
    data[6:10] = struct.pack("<HH", 65535, 65535)
    at = data.index(b"\x2c")  # the image descriptor: left, top, width, height follow
    data[at + 5:at + 9] = struct.pack("<HH", 65535, 65535)
    return bytes(data)


def tiff_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A minimal uncompressed grey TIFF whose tags claim width x height."""
    entries = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, 200),
               (277, 3, 1), (278, 4, height), (279, 4, min(width * height, 2**32 - 1))]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, value in entries:
        ifd += struct.pack("<HHI", tag, kind, 1)
        ifd += struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
    ifd += struct.pack("<I", 0)
    head = b"II*\0" + struct.pack("<I", 8) + ifd
    return head + b"\0" * (200 - len(head)) + b"\0" * 64


def webp_bomb() -> bytes:
    """A lossless WebP whose VP8L header claims 16384 x 16384 pixels (the format's maximum)."""
    data = bytearray(_encode(Image.new("L", (8, 8), 255), "WEBP", lossless=True))
    at = data.index(b"VP8L") + 8 + 1  # chunk header, then the 0x2f signature byte
    bits = int.from_bytes(data[at:at + 4], "little")
    bits = (bits & ~((1 << 28) - 1)) | 16383 | (16383 << 14)
    data[at:at + 4] = bits.to_bytes(4, "little")
    return bytes(data)


def jpeg_bomb() -> bytes:
    """A small JPEG whose frame header (SOF0) claims 65000 x 65000 pixels."""
    data = bytearray(_encode(Image.new("L", (16, 16), 255), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5:at + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def truncated(fmt: str) -> bytes:
    data = _encode(Image.fromarray(_digit_gray(300)), fmt)
    return data[: len(data) // 2]


def corrupt_png() -> bytes:
    data = bytearray(_encode(Image.fromarray(_digit_gray(300)), "PNG"))
    at = data.index(b"IDAT") + 40
    data[at:at + 200] = bytes(range(200))
    return bytes(data)


def animated(fmt: str) -> bytes:
    first = Image.fromarray(_digit_gray())
    frames = [Image.new("L", first.size, 255), Image.fromarray(_digit_gray(digit=3))]
    return _encode(first, fmt, save_all=True, append_images=frames, **({"lossless": True} if fmt == "WEBP" else {}))


def sixteen_bit() -> bytes:
    return _encode(Image.fromarray(_digit_gray().astype(np.uint16) * 257), "PNG")


def huge_exif() -> bytes:
    exif = Image.Exif()
    exif[0x9286] = b"ASCII\0\0\0" + b"x" * 60_000  # UserComment: one APP1 segment holds at most 64 KB
    exif[0x010E] = "y" * 2000
    return _encode(Image.fromarray(_digit_gray()).convert("RGB"), "JPEG", exif=exif.tobytes())


def huge_icc(size: int = 500_000) -> bytes:
    icc = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()  # not a real profile
    return _encode(Image.fromarray(_digit_gray()).convert("RGB"), "PNG", icc_profile=icc)


def big_blank_png() -> bytes:
    """7000 x 7000 white (49 M pixels, under the limit): decodes in bounded memory, says no digit."""
    return _encode(Image.new("1", (7000, 7000), 1), "PNG")


IMAGE_INPUTS: list[tuple[str, object, str]] = [
    ("PNG decompression bomb (100,000 x 100,000 header)", png_bomb, "error"),
    ("GIF decompression bomb (65,535 x 65,535 header)", gif_bomb, "error"),
    ("TIFF decompression bomb (100,000 x 100,000 header)", tiff_bomb, "error"),
    ("WebP decompression bomb (16,384 x 16,384 header)", webp_bomb, "error"),
    ("JPEG decompression bomb (65,000 x 65,000 header)", jpeg_bomb, "error"),
    ("PNG 7000 x 7000 blank, under the pixel limit", big_blank_png, "result"),
    ("file larger than the size limit", lambda: b"\x89PNG\r\n\x1a\n" + bytes(MAX_BYTES), "error"),
    ("truncated PNG", lambda: truncated("PNG"), "error"),
    ("truncated JPEG", lambda: truncated("JPEG"), "error"),
    ("corrupt PNG data (CRC not checked: decodes to noise)", corrupt_png, "result or error"),
    ("zero-byte file", lambda: b"", "error"),
    ("text with an image extension", lambda: b"hello, this is not an image\n" * 10, "error"),
    ("HTML error page saved as .png", lambda: b"<!DOCTYPE html><html><body>404</body></html>", "error"),
    ("PNG signature only", lambda: b"\x89PNG\r\n\x1a\n", "error"),
    ("animated GIF (first frame read)", lambda: animated("GIF"), "7"),
    ("animated WebP (first frame read)", lambda: animated("WEBP"), "7"),
    ("1 x 5000 PNG", lambda: _encode(Image.new("L", (5000, 1), 255), "PNG"), "result"),
    ("5000 x 1 PNG with a line", lambda: _encode(Image.fromarray(np.r_[[255] * 2000, [0] * 1000, [255] * 2000]
                                                                  .astype(np.uint8)[:, None]), "PNG"), "result"),
    ("1 x 1 PNG", lambda: _encode(Image.new("L", (1, 1), 0), "PNG"), "result"),
    ("16-bit PNG", sixteen_bit, "7"),
    ("palette PNG", lambda: _encode(Image.fromarray(_digit_gray()).convert("P"), "PNG"), "7"),
    ("CMYK JPEG", lambda: _encode(Image.fromarray(_digit_gray()).convert("CMYK"), "JPEG"), "7"),
    ("CMYK TIFF", lambda: _encode(Image.fromarray(_digit_gray()).convert("CMYK"), "TIFF"), "7"),
    ("JPEG with a 60 KB EXIF block", huge_exif, "7"),
    ("PNG with a 500 KB (invalid) ICC profile", huge_icc, "7"),
    # over Pillow's limit, but a plain PNG is decoded by libspng, which reads it (image.plain_png)
    ("PNG with a 2 MB ICC profile (over Pillow's 1 MB chunk limit)", lambda: huge_icc(2_000_000), "7"),
    ("array with NaN and inf", lambda: np.where(_digit_gray() < 128, np.nan, np.inf), "result"),
    ("empty array (0 x 0)", lambda: np.zeros((0, 0)), "error"),
    ("4-D array", lambda: np.zeros((2, 3, 4, 5)), "error"),
    ("complex array", lambda: np.zeros((10, 10), complex), "error"),
    ("object array", lambda: np.array([[object()]]), "error"),
    ("array 1 x 5000", lambda: np.zeros((1, 5000), np.uint8), "result"),
]


IMAGE_OUTCOMES = {"error": "a one-line ImageError, within 10 s",
                  "result": "an answer (a digit or 'no digit'), within 10 s",
                  "result or error": "an answer or a one-line ImageError, within 10 s"}


def image_case_id(name: str) -> str:
    return "image-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


IMAGE_CASES = [Case(image_case_id(name), "image", name,
                    IMAGE_OUTCOMES.get(expected, f"read as {expected}, within 10 s"))
               for name, _, expected in IMAGE_INPUTS]
HTTP_CASES: list[Case] = []  # the service helper adds HTTP cases here (area "http")

CASES: list[Case] = CLI_CASES + IDX_CASES + FILES_CASES + IMAGE_CASES + HTTP_CASES


def area(name: str) -> list[Case]:
    return [c for c in CASES if c.area == name]


def get(case_id: str) -> Case:
    for c in CASES:
        if c.id == case_id:
            return c
    raise KeyError(f"no hostile case {case_id!r} in digitlab.testing.hostile")


def case_id(case: Case) -> str:
    """pytest ids for a parametrized `case`: `ids=hostile.case_id`."""
    return case.id
