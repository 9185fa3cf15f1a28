"""The reader's pipeline (reader/pipeline.py): each step alone, the looks tried before 'no digit',
and the trace that --explain writes."""

import cv2
import numpy as np
import pytest

from digitlab.errors import NoDigitError
from digitlab.reader.image import load
from digitlab.reader.pipeline import (
    AS_IT_IS,
    FLATTENED,
    LOOKS,
    OTHER_POLARITY,
    Page,
    find_step,
    looks,
    page_step,
    read_page,
    structure_step,
)
from digitlab.reader.preprocess import PreprocessConfig
from digitlab.testing.corpus import drawn_digit


def dark_on_paper(ink: np.ndarray, paper: int = 230) -> np.ndarray:
    return (paper - ink * (paper - 20)).astype(np.uint8)


def test_page_step_makes_ink_bright_and_paper_zero_in_either_polarity():
    ink = np.pad(drawn_digit(3, 100, np.random.default_rng(0), width=0.1), 20)
    for picture in (dark_on_paper(ink), (ink * 255).astype(np.uint8)):
        x = page_step(load(picture), PreprocessConfig())
        assert x[ink > 0.9].min() > 200 and np.percentile(x[ink == 0], 99) == 0


def test_page_step_calls_a_blank_picture_blank():
    with pytest.raises(NoDigitError):
        page_step(load(np.full((80, 80), 200, np.uint8)), PreprocessConfig())


def test_the_other_polarity_is_a_look_of_its_own():
    ink = np.pad(drawn_digit(7, 100, np.random.default_rng(1), width=0.1), 20)
    picture = dark_on_paper(ink)
    as_is = page_step(load(picture), PreprocessConfig(), AS_IT_IS)
    other = page_step(load(picture), PreprocessConfig(), OTHER_POLARITY)
    assert as_is[ink > 0.9].mean() > 200 and other[ink > 0.9].mean() < 50


def test_which_looks_a_picture_gets():
    photo_like = load(np.random.default_rng(0).integers(0, 255, (100, 100), dtype=np.uint8))
    canvas = load(np.zeros((28, 28), np.uint8))
    assert looks(photo_like, PreprocessConfig()) == list(LOOKS)
    assert looks(canvas, PreprocessConfig()) == [AS_IT_IS, FLATTENED]  # too small to be a photo of paper
    assert looks(photo_like, PreprocessConfig(flatten_background=False)) == [AS_IT_IS]  # an ablation


def test_structure_step_is_the_identity_without_lines_or_when_switched_off():
    x = (np.pad(drawn_digit(5, 100, np.random.default_rng(2), width=0.1), 20) * 255).astype(np.uint8)
    assert structure_step(x, PreprocessConfig()) == (x, None, None)
    boxed = x.copy()
    cv2.rectangle(boxed, (5, 5), (134, 134), 200, 2)
    clean, structure, turn = structure_step(boxed, PreprocessConfig())
    assert structure is not None and turn is None and clean[5:8, 20:120].max() == 0 and clean[ink_rows(x)].any()
    assert structure_step(boxed, PreprocessConfig(remove_lines=False)) == (boxed, None, None)
    with pytest.raises(NoDigitError, match="only printed lines"):
        structure_step(np.where(x > 0, 0, boxed).astype(np.uint8), PreprocessConfig())


def ink_rows(x: np.ndarray) -> np.ndarray:
    return x.max(axis=1) > 0


def test_find_step_keeps_one_digit_and_drops_a_far_stray_mark():
    x = np.zeros((200, 300), np.uint8)
    x[40:140, 40:110] = (drawn_digit(1, 100, np.random.default_rng(3), width=0.1)[:, 15:85] * 255).astype(np.uint8)
    x[180:186, 280:286] = 255  # a speck of dust far away
    digit, picture = find_step(x, PreprocessConfig(), single=True)
    assert digit[180:, 270:].max() == 0 and picture[40:140, 40:110].any()


def test_read_page_traces_every_step_in_order():
    ink = np.pad(drawn_digit(2, 120, np.random.default_rng(4), width=0.1), 30)
    picture = dark_on_paper(ink)
    cv2.line(picture, (0, 150), (picture.shape[1] - 1, 150), 120, 2)  # a printed line under it
    x28, page = read_page(picture, trace=True)
    assert [step for step, _ in page.trace] == ["decode", "page", "structure", "without lines", "find", "normalize"]
    assert page.trace[-1][1] is x28 and x28.shape == (28, 28)
    assert page.structure is not None and len(page.structure.rows) == 1


def test_a_turned_form_is_deskewed_and_boxes_come_back_in_input_pixels():
    """A comb photographed 2.5 degrees off square: the structure step turns it square, finds its five
    boxes, and a box in the turned page maps back onto the input's pixels."""
    x = np.zeros((120, 560), np.uint8)
    for y in (20, 100):
        cv2.line(x, (20, y), (540, y), 180, 2)
    for k in range(6):
        cv2.line(x, (20 + 104 * k, 20), (20 + 104 * k, 100), 180, 2)
    cv2.line(x, (70, 35), (70, 85), 255, 6)  # a 1 in the first box
    matrix = cv2.getRotationMatrix2D((280, 60), 2.5, 1.0)
    turned = cv2.warpAffine(x, matrix, (560, 120))
    clean, structure, turn = structure_step(turned, PreprocessConfig())
    assert turn is not None and len(structure.fields) == 5
    page = Page(clean, (2.0, 2.0), (1120, 240), turn=turn)
    ink = np.argwhere(clean > 128)
    (top, left), (bottom, right) = ink.min(axis=0), ink.max(axis=0) + 1
    box = page.to_input(left, top, right, bottom)
    # the 1 stood at x = 70, y = 35-85 before the picture was turned: where it is in the input, x2
    (x0, y0), (x1, y1) = (matrix @ np.array([[70, 35, 1], [70, 85, 1]], np.float64).T).T * 2
    assert abs((box[0] + box[2]) / 2 - (x0 + x1) / 2) <= 6 and abs(box[1] - y0) <= 8 and abs(box[3] - y1) <= 8
