"""The image loader on hostile input: every case of digitlab.testing.hostile, fuzzing, and array properties.

The only outcomes allowed anywhere: a result, or digitlab's own one-line ImageError, quickly."""

import io
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageOps

from digitlab import reader
from digitlab.errors import ImageError, NoDigitError
from digitlab.reader.image import WORK_SIZE, decode_png, from_pil, load, plain_png
from digitlab.testing.hostile import IMAGE_INPUTS, _digit_gray, _encode, image_case_id

SECONDS = 10  # per case on a loaded 2-core machine; a bomb that decodes would take far longer or exhaust memory


@pytest.fixture(scope="module")
def model():
    return reader.get_model()


@pytest.mark.parametrize("name,build,expected", [  # each one a case of the hostile registry (RELIABILITY.md)
    pytest.param(*c, id=c[0], marks=pytest.mark.hostile(image_case_id(c[0]))) for c in IMAGE_INPUTS])
def test_hostile_case(name, build, expected, model):
    data = build()
    start = time.perf_counter()
    try:
        result = reader.classify(data, model)
    except ImageError as e:
        assert "error" in expected, f"{name}: unexpected error {e}"
        message = str(e)
        assert message and "\n" not in message and len(message) < 300
    else:
        assert expected != "error", f"{name}: accepted, {result['status']}"
        if expected.isdigit():
            assert result["label"] == int(expected), result
    assert time.perf_counter() - start < SECONDS


def test_loader_bounds_size_and_keeps_the_scale():
    data = _encode(Image.new("L", (4000, 3000), 255), "JPEG")
    loaded = load(data)
    assert max(loaded.gray.shape) <= 2 * WORK_SIZE and loaded.gray.dtype == np.uint8
    assert loaded.size == (4000, 3000)
    assert abs(loaded.scale[0] * loaded.gray.shape[1] - 4000) < 1
    assert abs(loaded.scale[1] * loaded.gray.shape[0] - 3000) < 1


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(orientation):
    rng = np.random.default_rng(orientation)
    image = Image.fromarray(rng.integers(0, 256, (30, 50), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(image, "PNG", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert np.array_equal(load(data).gray, expected)


def _pillow_pixels(data: bytes):
    """Pillow's path alone: what every PNG gave before the libspng fast path."""
    with Image.open(io.BytesIO(data)) as image:
        return from_pil(image, "test", WORK_SIZE)


def _png_kinds():
    rng = np.random.default_rng(7)
    g = rng.integers(0, 256, (37, 53), dtype=np.uint8)
    rgba = np.dstack([g, g[::-1], g[:, ::-1], g // 2 + 1])
    opaque = np.dstack([g, g[::-1], g[:, ::-1], np.full_like(g, 255)])
    return {"L": Image.fromarray(g), "1": Image.fromarray(g).convert("1"),
            "RGB": Image.fromarray(rgba[..., :3].copy()), "RGBA": Image.fromarray(rgba, "RGBA"),
            "RGBA opaque": Image.fromarray(opaque, "RGBA")}


@pytest.mark.parametrize("kind", sorted(_png_kinds()))
def test_plain_png_fast_path_gives_pillows_pixels(kind):
    data = _encode(_png_kinds()[kind], "PNG")
    assert plain_png(data, WORK_SIZE) == (53, 37)
    fast, slow = decode_png(data, (53, 37)), _pillow_pixels(data)
    assert fast is not None and np.array_equal(fast.gray, slow.gray)
    assert (fast.alpha is None) == (slow.alpha is None) == (kind != "RGBA")
    if kind == "RGBA":
        assert np.array_equal(fast.alpha, slow.alpha)
    assert np.array_equal(load(data).gray, fast.gray) and load(data).scale == slow.scale == (1.0, 1.0)


def test_pngs_the_fast_path_leaves_to_pillow():
    g = np.random.default_rng(8).integers(0, 256, (30, 50), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    others = {"colour key": _encode(Image.fromarray(g), "PNG", transparency=0),
              "orientation": _encode(Image.fromarray(g), "PNG", exif=exif.tobytes()),
              "palette": _encode(Image.fromarray(g).convert("P"), "PNG"),
              "16-bit": _encode(Image.fromarray(g.astype(np.uint16) * 257), "PNG"),
              "larger than the working size": _encode(Image.new("L", (WORK_SIZE + 1, 10)), "PNG"),
              "grey and alpha": _encode(Image.fromarray(np.dstack([g, g]), "LA"), "PNG"),
              "animated": _encode(Image.fromarray(g), "PNG", save_all=True, append_images=[Image.fromarray(g[::-1])]),
              "a JPEG": _encode(Image.fromarray(g), "JPEG")}
    for name, data in others.items():
        assert plain_png(data, WORK_SIZE) is None, name
    png = _encode(Image.fromarray(g), "PNG")
    for at in range(8, len(png), 7):  # a damaged byte anywhere: pixels of the right size, or Pillow decides
        damaged = bytearray(png)
        damaged[at] ^= 0xFF
        fast = decode_png(bytes(damaged), (50, 30))
        assert fast is None or fast.gray.shape == (30, 50)


def test_a_folder_given_as_an_image_is_a_one_line_error(tmp_path):
    with pytest.raises(ImageError, match="cannot be read") as error:
        load(str(tmp_path))
    assert str(tmp_path) in str(error.value) and "\n" not in str(error.value)


def outcome(data):
    """classify's result, or None for digitlab's own ImageError; anything else fails the test."""
    try:
        return reader.classify(data)
    except ImageError:
        return None


FUZZ = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
VALID = {"png": _encode(Image.fromarray(_digit_gray(60)), "PNG"),
         "jpeg": _encode(Image.fromarray(_digit_gray(60)), "JPEG", quality=80)}


@FUZZ
@given(st.binary(max_size=2000))
def test_fuzz_random_bytes(data):
    outcome(data)


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
       st.integers(0, 10**6), st.booleans())
def test_fuzz_mutated_png_and_jpeg(fmt, flips, cut, truncate):
    data = bytearray(VALID[fmt])
    for at, value in flips:
        data[at % len(data)] = value
    if truncate:
        data = data[: cut % len(data)]
    outcome(bytes(data))


DTYPES = ["bool", "uint8", "uint16", "int32", "int64", "float32", "float64"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.integers(1, 4000), st.integers(1, 4000), st.sampled_from(DTYPES), st.sampled_from(["flat", "noise", "box",
       "line"]), st.integers(0, 2**32 - 1))
def test_any_2d_array_gives_28x28_or_no_digit(h, w, dtype, kind, seed):
    if h * w > 4_000_000 and kind == "noise":
        h = min(h, 1000)  # random noise at 16 M pixels is slow to make, not to read
    rng = np.random.default_rng(seed)
    hi = {"bool": 1, "uint8": 255, "uint16": 65535, "int32": 1000, "int64": 255, "float32": 1.0,
          "float64": 255.0}[dtype]
    a = np.full((h, w), hi * rng.random(), np.float64)
    if kind == "noise":
        a = rng.random((h, w)) * hi
    elif kind == "box":
        t, x0 = rng.integers(0, h), rng.integers(0, w)
        a[t:t + 1 + rng.integers(0, h), x0:x0 + 1 + rng.integers(0, w)] = hi * rng.random()
    elif kind == "line":
        a[:, rng.integers(0, w)] = 0 if a.mean() > hi / 2 else hi
    a = (a > hi / 2) if dtype == "bool" else a.astype(dtype)
    try:
        x = reader.preprocess(a)
    except NoDigitError:
        return
    assert x.shape == (28, 28) and x.dtype == np.uint8 and x.max() > 0
