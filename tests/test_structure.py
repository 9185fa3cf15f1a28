"""The structure step: printed lines are not ink (reader/structure.py), and where people write digits
(testing/paper.py) the reader reads them. Unit tests on ink maps whose handwriting and printed lines
are known apart, then the whole reader on rendered pages of MNIST test digits."""

import cv2
import numpy as np
import pytest

from digitlab import reader
from digitlab.reader.pipeline import ink_map
from digitlab.reader.recognize import holds_the_writing
from digitlab.reader.structure import cells, deskew, find_structure, grid_sides, remove_structure, skew
from digitlab.testing.corpus import drawn_digit, form_sample, mnist_digit
from digitlab.testing.paper import layout


@pytest.fixture(scope="module")
def model():
    return reader.get_model()


def ink_map_of(kind: str, seed: int, n: int = 1, height: int = 80) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint8 ink map, handwriting mask, printed-line mask) of digits drawn on paper of `kind`."""
    rng = np.random.default_rng(seed)
    inks = [drawn_digit(int(rng.integers(10)), height, rng, width=0.1) for _ in range(n)]
    writing, lines = layout(inks, kind, rng)
    x = (np.maximum(writing, 0.7 * lines) * 255).round().astype(np.uint8)
    return x, writing > 0.5, (lines > 0.5) & (writing < 0.05)


@pytest.mark.parametrize("kind", ["box", "ruled", "squared", "underline", "comb"])
def test_printed_lines_go_and_the_handwriting_stays(kind):
    found, kept_ink, left_lines = 0, [], []
    for seed in range(12):
        x, writing, lines = ink_map_of(kind, seed, n=4 if kind == "comb" else 1)
        clean, structure = remove_structure(x)
        found += structure is not None
        kept_ink.append((clean[writing] > 0).mean())
        left_lines.append((clean[lines] > 0).mean())
    # measured on 40 pages of each kind (2026-12-05): 96-100% of the handwriting kept, 5-23% of the
    # line ink left (dotted lines, short underlines and boxes a digit overruns), lines found on 80-100%
    assert found >= 9, found
    assert np.mean(kept_ink) > 0.93, kept_ink
    assert np.mean(left_lines) < 0.3, left_lines


def test_a_digit_alone_has_no_structure():
    rng = np.random.default_rng(0)
    for d in range(10):
        x = (drawn_digit(d, 120, rng, width=0.12) * 255).astype(np.uint8)
        assert find_structure(x) is None, d
    # a 7 squashed into a 16x16 frame and blown up: its bar spans the frame, but it is thick for its length
    seven = np.zeros((112, 112), np.uint8)
    seven[:18] = 255
    seven[:, 80:98] = 255
    assert remove_structure(seven)[1] is None


def test_a_comb_gives_one_field_per_box_even_where_a_digit_hides_a_side():
    x, _, _ = ink_map_of("comb", 3, n=5)
    structure = find_structure(x)
    assert len(structure.fields) == 5
    widths = [f[2] - f[0] for f in structure.fields]
    assert max(widths) - min(widths) <= 3
    # a side lost: the cells still come out equal, the wide one split in two
    columns = structure.columns[:2] + structure.columns[3:]
    assert len(cells(columns)) == 5


def test_an_empty_box_in_a_comb_is_a_gap_in_the_text(mnist, model):
    _, (x, y) = mnist
    rng = np.random.default_rng(5)
    picks = [0, 1, 2, 3]
    inks = [mnist_digit(x[i], 60, rng) for i in picks]
    inks[2] = np.zeros_like(inks[2])  # the third box left empty
    writing, lines = layout(inks, "comb", rng)
    page = (255 - np.maximum(writing, lines) * 200).astype(np.uint8)
    reading = reader.read(page, model)
    truth = "".join(str(y[i]) for i in picks)
    assert reading.text == truth[:2] + " " + truth[3]
    assert len(reading.digits) == 3


@pytest.mark.parametrize("kind,least", [("box", 0.9), ("ruled", 0.8), ("squared", 0.6), ("underline", 0.8)])
def test_one_digit_where_people_write_it_is_read(kind, least, mnist, model):
    """MNIST test digits in a printed box, on ruled or squared paper, on a line, photographed or scanned."""
    _, (x, y) = mnist
    rng = np.random.default_rng([11, len(kind)])
    results = [(reader.classify(data, model), truth) for data, truth in (form_sample(x, y, kind, rng)
                                                                        for _ in range(30))]
    right = np.mean([str(r["guess"]) == truth for r, truth in results])
    assert right >= least, right
    # what is left of the lines rarely misleads the model into a sure answer
    assert sum(r["status"] == "ok" and str(r["label"]) != truth for r, truth in results) <= 2  # measured 0-2


def test_a_comb_row_is_read_box_by_box(mnist, model):
    _, (x, y) = mnist
    rng = np.random.default_rng(21)
    samples = [form_sample(x, y, "comb", rng) for _ in range(20)]
    readings = [reader.read(data, model) for data, _ in samples]
    # measured 2026-12-05: 90% exact, 90% of the right length, 1 wrong number "ok"
    assert np.mean([r.text == truth for r, (_, truth) in zip(readings, samples, strict=True)]) >= 0.8
    lengths = [len(r.text) == len(truth) for r, (_, truth) in zip(readings, samples, strict=True)]
    assert np.mean(lengths) >= 0.8
    assert sum(r.status == "ok" and r.text != truth for r, (_, truth) in zip(readings, samples, strict=True)) <= 2


def test_light_falling_off_a_photo_of_a_number_invents_no_digits(mnist, model):
    """Numbers photographed with the light falling off by 35-65% across the page: the dark side's
    shading and the paper's edge never become digits."""
    _, (x, y) = mnist
    rng = np.random.default_rng(7)
    samples = [form_sample(x, y, "photo_number", rng) for _ in range(20)]
    readings = [reader.read(data, model) for data, _ in samples]
    longer = [r for r, (_, truth) in zip(readings, samples, strict=True) if len(r.text) > len(truth)]
    # measured 2026-12-05: 2 of 20 longer, one of them "ok" (a wide 0 cut into a 6 and a 7: BENCHMARKS.md)
    assert len(longer) <= 2
    assert sum(r.status == "ok" for r in longer) <= 1
    assert np.mean([r.text == truth for r, (_, truth) in zip(readings, samples, strict=True)]) >= 0.8  # measured 0.9


def test_a_blob_cut_into_digits_that_read_almost_as_well_whole_is_unsure():
    """How many digits a blob holds is uncertain too: where the readings with another count score
    nearly as well, each cut piece's confidence says so."""
    from digitlab.reader.recognize import Lattice, Piece, best_reading

    def piece(label: int, p: float, width: float = 0.6) -> Piece:
        probs = np.full(10, (1 - p) / 9)
        probs[label] = p
        return Piece(np.zeros((28, 28), np.uint8), (0, 0, 1, 1), width, probs)

    close = Lattice(3, {(0, 2): piece(9, 0.97, 0.85), (0, 1): piece(0, 0.99), (1, 2): piece(1, 0.99)})
    _, pieces = best_reading(close)
    assert [int(p.probabilities.argmax()) for p in pieces] == [0, 1] and all(p.cut < 0.9 for p in pieces)
    clear = Lattice(3, {(0, 2): piece(9, 0.3, 1.6), (0, 1): piece(0, 0.99), (1, 2): piece(1, 0.99)})
    _, pieces = best_reading(clear)
    assert all(p.cut > 0.99 for p in pieces)
    whole = Lattice(3, {(0, 2): piece(9, 0.99, 0.8), (0, 1): piece(0, 0.6), (1, 2): piece(1, 0.6)})
    _, pieces = best_reading(whole)
    assert len(pieces) == 1 and pieces[0].cut == 1.0


def test_a_low_confidence_answer_is_not_ok(model):
    """Half a 4 and half a 9 in one picture: whatever the model guesses, it is not sure of it."""
    rng = np.random.default_rng(0)
    four, nine = drawn_digit(4, 120, rng), drawn_digit(9, 120, rng)
    blend = np.concatenate([four[:, :60], nine[:, 60:]], axis=1)
    result = reader.classify((255 - blend * 255).astype(np.uint8), model, min_confidence=0.999)
    assert result["status"] == "unsure" and result["label"] is None and result["guess"] in range(10)
    assert result["confidence"] < 0.999


def test_ink_map_traces_the_steps():
    x, _, _ = ink_map_of("box", 1)
    page = ink_map(255 - x, trace=True)
    assert [step for step, _ in page.trace] == ["page", "structure", "without lines", "find"]
    assert page.structure is not None and page.structure.rows and page.structure.columns


@pytest.mark.parametrize("angle", [-2.7, -1.2, 0.0, 0.8, 2.4])
def test_skew_is_measured_from_the_lines_and_deskew_undoes_it(angle):
    x = np.zeros((150, 600), np.uint8)
    for y in (40, 110):
        cv2.line(x, (10, y), (590, y), 255, 2)
    tilted = cv2.warpAffine(x, cv2.getRotationMatrix2D((300, 75), angle, 1.0), (600, 150))
    found = skew(tilted)
    assert abs(found - angle) <= 0.25, found
    square, _ = deskew(tilted, found)
    assert (square > 128).sum(axis=1).max() >= 0.95 * (x > 128).sum(axis=1).max()  # each line on its rows again


def test_a_comb_is_equal_cells_between_its_ends_and_an_upright_stroke_is_no_side():
    band = np.zeros((40, 500), np.uint8)
    for c in (0, 100, 300, 400, 499):  # the side at 200 is hidden under a digit
        band[:, c] = 1
    band[2:38, 250] = 1  # a 1 written in the third box, nearly as tall as the box
    sides = grid_sides(band, 0, 500)
    assert np.allclose([(a + b) / 2 for a, b in sides], [0, 100, 200, 300, 400, 499], atol=1.5)
    assert grid_sides(band[:, :120], 0, 120) == []  # two sides 100 px apart in a band 40 tall: too wide for a box


def test_boxes_that_leave_writing_outside_do_not_hold_it():
    ink = np.zeros((60, 300), np.uint8)
    ink[15:45, 20:30] = 255  # a digit in the first box
    ink[15:45, 220:230] = 255  # and one where no box was found
    assert holds_the_writing(ink, [(0, 10, 50, 50), (50, 10, 100, 50), (200, 10, 250, 50)])
    assert not holds_the_writing(ink, [(0, 10, 50, 50), (50, 10, 100, 50)])
