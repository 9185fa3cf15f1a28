import numpy as np
import pytest

from digitlab.lab import augment


@pytest.fixture(scope="module")
def digits(mnist):
    images, labels = mnist[1]
    return images[:40], labels[:40]


def test_views_are_deterministic_and_independent_of_workers(digits):
    images, _ = digits
    one = augment.realistic_views(images, n_views=2, seed=3, workers=1, chunk=16)
    two = augment.realistic_views(images, n_views=2, seed=3, workers=2, chunk=16)
    assert one.shape == (2, 40, 28, 28) and one.dtype == np.uint8
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one, augment.realistic_views(images, n_views=2, seed=4, workers=1, chunk=16))


def test_views_differ_from_mnist_but_keep_the_digit(digits):
    images, _ = digits
    views = augment.realistic_views(images, n_views=1, seed=0, workers=1)[0]
    changed = np.mean([not np.array_equal(a, b) for a, b in zip(views, images, strict=True)])
    assert changed > 0.75  # the rest fell back to the original: the reader found no digit in the rendering
    ink = (views > 128).sum(axis=(1, 2))
    assert ink.min() > 15  # never blank: the digit is still there


@pytest.mark.parametrize("transform", [augment.frame_filling, augment.low_resolution, augment.thickness,
                                       augment.pen_strokes, augment.slant_and_elastic])
def test_each_transform_keeps_ink_in_range(digits, transform):
    images, _ = digits
    rng = np.random.default_rng(0)
    for image in images[:10]:
        out = transform(augment.upscale(image.astype(np.float32) / 255), rng)
        assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
        assert (out > 0.5).sum() > 20


def test_pen_strokes_have_constant_width(digits):
    """A pen redraw has one stroke width: distance to background is capped at the pen's radius."""
    images, _ = digits
    ink = augment.upscale(images[0].astype(np.float32) / 255)
    redrawn = augment.pen_strokes(ink, np.random.default_rng(1))
    inside = cv2_distance((redrawn > 0.5).astype(np.uint8))
    original = cv2_distance((ink > 0.5).astype(np.uint8))
    assert inside.max() <= 0.09 * 112 + 1.5
    assert inside.max() != original.max()


def cv2_distance(mask):
    import cv2

    return cv2.distanceTransform(mask, cv2.DIST_L2, 5)


def test_not_one_digit_images_are_deterministic_and_never_blank(digits):
    images, labels = digits
    one = augment.not_one_digit(images, labels, 30, n_views=2, seed=3, workers=1, chunk=8)
    two = augment.not_one_digit(images, labels, 30, n_views=2, seed=3, workers=2, chunk=8)
    assert one.shape == (2, 30, 28, 28) and one.dtype == np.uint8
    np.testing.assert_array_equal(one, two)
    assert not np.array_equal(one[0], one[1])  # each view is another image
    assert (one > 128).sum(axis=(2, 3)).min() > 10
    assert augment.not_one_digit(images, labels, 0, n_views=3).shape == (3, 0, 28, 28)


def test_a_straight_stroke_is_a_one_and_the_side_of_a_zero_is_not():
    import cv2

    bar = np.zeros((112, 112), np.float32)
    cv2.line(bar, (50, 10), (60, 100), 1.0, 9)
    ring = np.zeros((112, 112), np.float32)
    cv2.ellipse(ring, (56, 56), (30, 45), 0, 0, 360, 1.0, 9)
    assert augment.straight(bar)
    assert not augment.straight(augment.crop_to_ink(ring)[:, :22])  # the left 30% of a 0


def test_side_by_side_touches_and_keeps_both_digits(digits):
    images, _ = digits
    rng = np.random.default_rng(0)
    a, b = (augment.upscale(im.astype(np.float32) / 255) for im in images[:2])
    for _ in range(20):
        pair = augment.side_by_side(a, b, rng)
        wa, wb = augment.crop_to_ink(a).shape[1], augment.crop_to_ink(b).shape[1]
        assert 0.75 * min(wa, wb) <= pair.shape[1] - max(wa, wb) <= min(wa, wb) * 1.07
        assert np.isclose(pair.sum(), a.sum() + b.sum(), rtol=0.35)  # both there, overlapping a little


@pytest.mark.slow
def test_training_on_realistic_views_and_calibrating_on_the_hold_out(tmp_path):
    """A run with realistic views trains (one view per image per epoch), and its export fits the
    temperature on the run's held-out validation split, never on the test split."""
    from digitlab.card import read
    from digitlab.lab.experiment import train_run
    from digitlab.lab.export import export

    model, metrics = train_run("fast", tmp_path / "run", limit=1000, epochs=1, realistic_views=1, progress=False)
    assert model.config.realistic_views == 1 and metrics["val_images"] == 100
    card = read(export(tmp_path / "run", out=tmp_path / "m.onnx"))
    assert card["temperature"] != 1.0
    assert "100 held-out validation images" in card["calibration"] and "test split only measures" in card["calibration"]
    assert 0 <= card["test"]["ece"] < 0.5
