"""Preprocessing: every input kind loads, and what comes out looks like MNIST (no model needed)."""

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from digitlab.errors import ImageError, NoDigitError
from digitlab.reader.image import load
from digitlab.reader.pipeline import ink_map, page_step, prepare, preprocess
from digitlab.reader.preprocess import (
    MNIST_STROKE,
    PreprocessConfig,
    median,
    pick_digit,
    remove_specks,
    resize_only,
    stroke_width,
)
from digitlab.testing.corpus import drawn_digit


def digit_ink(size=200, digit=3, width=0.1) -> np.ndarray:
    return drawn_digit(digit, size, np.random.default_rng(digit), width=width)


def on_canvas(ink, shape=(300, 400), at=(50, 60), paper=1.0, color=0.0) -> np.ndarray:
    """A float gray canvas with `ink` placed at `at`."""
    a = np.zeros(shape, np.float32)
    a[at[0]:at[0] + ink.shape[0], at[1]:at[1] + ink.shape[1]] = ink
    return paper * (1 - a) + color * a


def u8(a) -> np.ndarray:
    return (np.clip(a, 0, 1) * 255).round().astype(np.uint8)


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def similar(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation, best over shifts of up to one pixel (centre-of-mass rounding may move a digit by one)."""
    return max(float(np.corrcoef(np.roll(a, (dy, dx), (0, 1)).ravel().astype(float), b.ravel().astype(float))[0, 1])
               for dy in (-1, 0, 1) for dx in (-1, 0, 1))


@pytest.fixture(scope="module")
def reference():
    return preprocess(u8(on_canvas(digit_ink())))


def variants():
    gray = u8(on_canvas(digit_ink()))
    L = Image.fromarray(gray, "L")
    rgb = Image.merge("RGB", [L, L, L])
    alpha = Image.fromarray(255 - gray, "L")
    rgba_black = Image.merge("RGBA", [Image.new("L", L.size, 0)] * 3 + [alpha])  # black pen, transparent
    rgba_white = Image.merge("RGBA", [Image.new("L", L.size, 255)] * 3 + [alpha])  # white pen, transparent
    palette = L.convert("P")
    palette_t = rgba_black.quantize(16)  # a palette with a transparent entry
    i16 = Image.fromarray(gray.astype(np.uint16) * 257)
    yield "L png", encode(L, "PNG")
    yield "1-bit png", encode(L.point(lambda v: 255 if v > 128 else 0).convert("1"), "PNG")
    yield "16-bit png", encode(i16, "PNG")
    yield "RGB jpeg", encode(rgb, "JPEG", quality=80)
    yield "RGB bmp", encode(rgb, "BMP")
    yield "RGB tiff", encode(rgb, "TIFF")
    yield "RGB webp", encode(rgb, "WEBP", quality=80)
    yield "CMYK jpeg", encode(rgb.convert("CMYK"), "JPEG")
    yield "CMYK tiff", encode(rgb.convert("CMYK"), "TIFF")
    yield "P gif", encode(palette, "GIF")
    yield "P png transparent", encode(palette_t, "PNG")
    yield "RGBA black-on-transparent", encode(rgba_black, "PNG")
    yield "RGBA white-on-transparent", encode(rgba_white, "PNG")
    yield "LA png", encode(rgba_black.convert("LA"), "PNG")
    yield "PIL image", rgb
    yield "numpy uint8", gray
    yield "numpy float", gray.astype(np.float32) / 255
    yield "numpy RGB", np.dstack([gray] * 3)
    yield "numpy uint16", gray.astype(np.uint16) * 257
    yield "numpy bool", gray > 128


@pytest.mark.parametrize("name,data", list(variants()), ids=[n for n, _ in variants()])
def test_every_format_and_mode_gives_the_same_digit(name, data, reference):
    out = preprocess(data)
    assert out.shape == (28, 28) and out.dtype == np.uint8
    assert similar(out, reference) > 0.85, name


def test_path_input_and_first_gif_frame(tmp_path, reference):
    frames = [Image.fromarray(u8(on_canvas(digit_ink())), "L"), Image.new("L", (400, 300), 255)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert similar(preprocess(path), reference) > 0.85
    assert similar(preprocess(str(path)), reference) > 0.85


def test_exif_orientation_is_honoured(reference):
    upright = Image.fromarray(u8(on_canvas(digit_ink())), "L")
    stored = upright.transpose(Image.ROTATE_90)  # what a camera stores, plus "rotate 270 on display"
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(stored.convert("RGB"), "JPEG", exif=exif.tobytes(), quality=90)
    assert similar(preprocess(data), reference) > 0.85
    assert similar(preprocess(encode(stored.convert("RGB"), "JPEG", quality=90)), reference) < 0.6


def test_polarity_light_on_dark_equals_dark_on_light():
    ink = digit_ink(digit=5)
    dark_on_light = preprocess(u8(on_canvas(ink, paper=0.9, color=0.1)))
    light_on_dark = preprocess(u8(on_canvas(ink, paper=0.1, color=0.9)))
    assert similar(dark_on_light, light_on_dark) > 0.97
    assert dark_on_light[0].max() == 0  # background is black, ink is bright, as in MNIST
    assert dark_on_light.max() == 255


@pytest.mark.parametrize("size,at", [(30, (5, 5)), (120, (400, 10)), (500, (20, 480))])
def test_small_or_large_digit_anywhere_is_centred_and_scaled(size, at):
    out = preprocess(u8(on_canvas(digit_ink(size, digit=2), shape=(600, 1000), at=at)))
    r, c = ndimage.center_of_mass(out.astype(float))
    assert abs(r - 14) <= 1 and abs(c - 14) <= 1
    rows, cols = np.flatnonzero(out.max(1) > 40), np.flatnonzero(out.max(0) > 40)
    assert 18 <= max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) <= 21  # longer side ~20 px


@pytest.mark.parametrize("width", [0.02, 0.1, 0.3])
def test_stroke_width_is_brought_near_mnist(width):
    out = preprocess(u8(on_canvas(digit_ink(400, digit=7, width=width), shape=(500, 500))))
    w = stroke_width(out / 255)
    assert 0.6 * MNIST_STROKE <= w <= 1.9 * MNIST_STROKE, w
    raw = preprocess(u8(on_canvas(digit_ink(400, digit=7, width=width), shape=(500, 500))),
                     PreprocessConfig(stroke_width=False))
    if width == 0.02:
        assert stroke_width(raw / 255) < w  # the step did the thickening


def test_uneven_light_and_noise_are_removed(reference):
    ink = digit_ink()
    yy, xx = np.mgrid[0:300, 0:400]
    light = 1.0 - 0.6 * xx / 400  # bright on the left, dim on the right
    noise = np.random.default_rng(0).normal(0, 0.03, (300, 400))
    photo = on_canvas(ink, paper=0.85, color=0.15) * light + noise
    assert similar(preprocess(u8(photo)), reference) > 0.85
    flat_off = preprocess(u8(photo), PreprocessConfig(flatten_background=False, threshold=False))
    assert similar(flat_off, reference) < similar(preprocess(u8(photo)), reference)


def test_mnist_digits_pass_through_nearly_unchanged(mnist):
    (_, _), (x, _) = mnist
    scores = [similar(preprocess(x[i]), x[i]) for i in range(100)]
    assert np.median(scores) > 0.95 and np.mean(scores) > 0.9


@pytest.mark.parametrize("kind", ["white", "black", "grey", "gradient", "noise", "transparent", "jpeg"])
def test_blank_images_say_no_digit(kind):
    rng = np.random.default_rng(1)
    a = {"white": np.ones((200, 300)), "black": np.zeros((200, 300)), "grey": np.full((200, 300), 0.5),
         "gradient": np.tile(np.linspace(0.3, 0.9, 300), (200, 1)),
         "noise": np.clip(0.8 + rng.normal(0, 0.02, (200, 300)), 0, 1)}.get(kind)
    if kind == "transparent":
        data = encode(Image.new("RGBA", (300, 200), (0, 0, 0, 0)), "PNG")
    elif kind == "jpeg":
        data = encode(Image.new("RGB", (300, 200), (230, 220, 200)), "JPEG", quality=30)
    else:
        data = u8(a)
    with pytest.raises(NoDigitError):
        preprocess(data)


def test_deskew_makes_a_slanted_one_upright():
    canvas = Image.new("L", (200, 200), 0)
    from PIL import ImageDraw

    ImageDraw.Draw(canvas).line([(70, 180), (130, 20)], fill=255, width=14)
    plain = preprocess(np.asarray(canvas))
    upright = preprocess(np.asarray(canvas), PreprocessConfig(deskew=True))
    width = lambda x: int((x.max(axis=0) > 60).sum())  # noqa: E731
    assert width(upright) < width(plain) - 3


@pytest.mark.parametrize("bad", [b"not an image", b"\x89PNG\r\n\x1a\n truncated", 42, np.zeros((3, 4, 5, 6))])
def test_bad_input_gets_a_clear_error(bad):
    with pytest.raises(ImageError):
        preprocess(bad)


def test_missing_file_error_names_it(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        preprocess(tmp_path / "nope.png")


def test_resize_only_baseline_is_just_a_squash():
    out = resize_only(u8(on_canvas(digit_ink())))
    assert out.shape == (28, 28) and out.mean() > 128  # white paper stays white: nothing clever


def test_a_far_away_smudge_does_not_shrink_the_digit(reference):
    canvas = on_canvas(digit_ink(), shape=(400, 500), at=(50, 60))
    canvas[360:372, 470:485] = 0.0  # a dark smudge in the far corner, bigger than a speck
    assert similar(preprocess(u8(canvas)), reference) > 0.9


def test_the_picture_keeps_every_blob_and_the_digit_only_its_own():
    canvas = on_canvas(digit_ink(), shape=(400, 500), at=(50, 60))
    canvas[360:372, 470:485] = 0.0  # a smudge away from the digit
    canvas[100:101, 400:401] = 0.5  # a speck
    x = page_step(load(u8(canvas)), PreprocessConfig())
    m = ink_map(u8(canvas), single=True)
    picture, digit = pick_digit(x)
    assert np.array_equal(m.ink, digit) and np.array_equal(m.picture, picture)
    assert np.array_equal(picture, remove_specks(x))  # the whole picture: the smudge stays, the speck goes
    assert m.picture[360:372, 470:485].all() and not m.ink[360:372, 470:485].any()
    x28, box, picture = prepare(u8(canvas))  # a clean canvas is read at half size: so is its picture
    assert np.array_equal(x28, preprocess(u8(canvas))) and picture.shape == (200, 250)
    assert picture[181:185, 236:242].all() and picture[50:150, 50:150].any()


def test_median_is_numpys():
    rng = np.random.default_rng(3)
    for n in [1, 2, 3, 4, *rng.integers(5, 3000, 40)]:
        a = (rng.random(n) ** rng.uniform(0.2, 5) * 255).astype(np.uint8)
        assert median(a) == np.median(a) and median(np.full(n, 7, np.uint8)) == 7.0
