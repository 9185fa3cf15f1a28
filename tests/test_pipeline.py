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
    assert structure_step(x, PreprocessConfig()) == (x, None)
    boxed = x.copy()
    cv2.rectangle(boxed, (5, 5), (134, 134), 200, 2)
    clean, structure = structure_step(boxed, PreprocessConfig())
    assert structure is not None and clean[5:8, 20:120].max() == 0 and clean[ink_rows(x)].any()
    assert structure_step(boxed, PreprocessConfig(remove_lines=False)) == (boxed, None)
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
