"""Frame-filling 1-bit digits with thick strokes (issue 10): a digit cut to its ink, thickened, squashed to
16x16 without keeping its aspect, binarized and maybe blown up blocky, the way several public collections
store digits. Each test pins one thing the reader does for them."""

import cv2
import numpy as np
import pytest

from digitlab import reader
from digitlab.reader.image import load
from digitlab.reader.pipeline import fills_frame, ink_map, narrower_views, prepare, preprocess, thinner_view
from digitlab.reader.preprocess import block_size, dark_ink, smooth_bitmap, stroke_width, two_level
from digitlab.reader.recognize import looks_like_a_digit
from digitlab.testing.corpus import frame_filling, ink_crop


def thick_bitmap(image28: np.ndarray, side: int = 16) -> np.ndarray:
    """frame_filling's recipe without its random choices: bool [side, side], True where the ink is."""
    ink = cv2.resize(ink_crop(cv2.dilate(image28, np.ones((3, 3), np.uint8)), 40), (side, side),
                     interpolation=cv2.INTER_AREA)
    return ink / ink.max() > 0.5


@pytest.fixture(scope="module")
def test_digits(mnist):
    (_, _), (x, y) = mnist
    return x, y


@pytest.fixture(scope="module")
def model():
    return reader.get_model()


def test_two_level_tells_bitmaps_from_greys():
    assert two_level(np.array([[0, 255, 255], [255, 0, 0]], np.uint8))
    assert two_level(np.array([[7, 9], [9, 9]], np.uint8))
    assert two_level(np.full((5, 5), 3, np.uint8))
    assert not two_level(np.array([[0, 128, 255]], np.uint8))
    grey = np.zeros((64, 64), np.uint8)
    grey[10:50, 30:34] = 255
    grey[33, 31] = 200  # one grey pixel outside the sparse sample still counts
    assert not two_level(grey)


def test_block_size_finds_a_blocky_upscale_and_smooth_bitmap_undoes_it(test_digits):
    x, _ = test_digits
    bitmap = thick_bitmap(x[0]).astype(np.uint8) * 255
    big = cv2.resize(bitmap, (112, 112), interpolation=cv2.INTER_NEAREST)
    assert block_size(big) == 7 and block_size(bitmap) == 1
    broken = big.copy()
    broken[3, 3] ^= 255  # one pixel off the grid: not an upscale
    assert block_size(broken) == 1
    smooth = smooth_bitmap(big)
    assert smooth.shape == (64, 64)  # back to 16x16, then 4x finer with cubic edges
    assert not two_level(smooth)
    assert np.array_equal(cv2.resize(smooth, (16, 16), interpolation=cv2.INTER_AREA) > 127, bitmap > 0)


def test_paper_of_a_small_frame_filling_bitmap_is_its_border_majority(test_digits):
    """A 16x16 bitmap whose ink covers much of the picture and its border: the paper is the border's
    majority. Smoothing before taking the border's median mixed the border with the ink beside it,
    and it decided the other way for one such bitmap in twenty."""
    x, _ = test_digits
    checked = 0
    for image in x[:200]:
        ink = thick_bitmap(image)
        for gray in (np.where(ink, 0, 255).astype(np.uint8), np.where(ink, 255, 0).astype(np.uint8)):
            white_border = float(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).mean()) / 255
            if abs(white_border - 0.5) >= 0.1:  # else the border alone cannot tell
                assert dark_ink(gray) == (white_border > 0.5)
                checked += 1
    assert checked > 300


def test_a_thick_white_on_black_bitmap_is_not_hollowed(test_digits):
    """Tiles full of ink made its paper look uneven, and flattening it left only the strokes' outline."""
    x, _ = test_digits
    for image in x[:30]:
        ink = cv2.resize(thick_bitmap(image).astype(np.uint8) * 255, (112, 112), interpolation=cv2.INTER_NEAREST)
        m = ink_map(ink, single=True)
        assert np.array_equal(m.ink > 0, ink > 0)


def test_fills_frame():
    assert fills_frame((0, 0, 112, 112), (112, 112))
    assert fills_frame((1, 0, 300, 299), (300, 300))  # a pixel of slack in 100
    assert not fills_frame((0, 0, 100, 112), (112, 112))
    assert not fills_frame((10, 12, 90, 100), (112, 112))


def test_narrower_views_only_for_digits_that_fill_their_frame(test_digits):
    x, y = test_digits
    bitmap = next(b for b in (thick_bitmap(x[i]) for i in np.flatnonzero(y == 1))
                  if b[0].any() and b[-1].any() and b[:, 0].any() and b[:, -1].any())
    square = cv2.resize(np.where(bitmap, 0, 255).astype(np.uint8), (112, 112), interpolation=cv2.INTER_NEAREST)
    loaded = load(square)
    x28, box, _ = prepare(loaded)
    views = narrower_views(loaded, box, aspects=(0.7, 0.45))
    assert len(views) == 2
    widths = [np.ptp(np.flatnonzero(v.max(0) > 40)) for v in (x28, *views)]
    assert widths[0] > widths[1] > widths[2]  # each narrower than the last
    margin = cv2.copyMakeBorder(square, 20, 20, 20, 20, cv2.BORDER_CONSTANT, value=255)
    loaded = load(margin)
    assert narrower_views(loaded, prepare(loaded)[1]) == []


def test_thick_1bit_ones_are_not_called_not_a_digit(test_digits, model):
    """A thin 1 squashed into a square frame turns into a thick bar or a block: too thick for a digit
    once eroded by half its stroke. classify reads such a bitmap again narrower and thinner."""
    x, y = test_digits
    rng = np.random.default_rng(0)
    data = [frame_filling(x[i], rng, bits=True, thick=True) for i in np.flatnonzero(y == 1)[:80]]
    vetoed = [d for d in data if not looks_like_a_digit(preprocess(d))]
    assert len(vetoed) >= 8  # measured 10: the default view alone
    results = [reader.classify(d, model) for d in data]
    assert sum(r["status"] == "not a digit" for r in results) <= 3  # measured 1
    assert np.mean([r["guess"] == 1 for r in results]) >= 0.8  # measured 0.91 (0.65 of them sure)
    for d in vetoed:
        view = thinner_view(load(d))
        assert len(view) == 1 and stroke_width(view[0] / 255) <= stroke_width(preprocess(d) / 255)


def test_thinner_view_is_only_for_bitmaps(test_digits):
    x, _ = test_digits
    grey = cv2.resize(255 - x[0], (112, 112), interpolation=cv2.INTER_CUBIC)
    assert thinner_view(load(grey)) == []


def test_frame_filling_thick_1bit_digits_are_read(test_digits, model):
    """120 MNIST test digits as frame_filling(bits=True, thick=True) makes them (the suite's
    frame16_1bit_thick). Measured 95.8% (2026-11-26 12:53; 89.2% before); the floor leaves room for a
    few digits to flip on another CPU."""
    x, y = test_digits
    right = 0
    for seed in (3, 4):
        rng = np.random.default_rng(seed)
        for i in rng.choice(len(x), 60, replace=False):
            r = reader.classify(frame_filling(x[i], rng, bits=True, thick=True), model)
            assert r["status"] != "no digit"
            right += r["guess"] == y[i]
    assert right / 120 >= 0.9, right  # measured 0.91 with the forms-trained model (0.93 before it)
