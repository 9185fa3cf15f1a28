"""The drawing pad in a real headless Chromium (Debian's /usr/bin/chromium; never a browser download),
against `digitlab serve` started on a free loopback port. The tests check what a person sees: drawn
sizes and visibility, not only the text; screenshots go to artifacts/ (git-ignored)."""

from __future__ import annotations

import math
import os
import shutil
import sqlite3

import pytest

from serve_util import REPO, Server, canvas, png, write_model

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.slow


def seven(x0: float) -> list[list[tuple[float, float]]]:
    return [[(x0, 60), (x0 + 120, 60), (x0 + 45, 235)]]


def three(x0: float) -> list[list[tuple[float, float]]]:
    """Two arcs open to the left, drawn in one stroke as people do."""
    upper = [(x0 + 45 * math.cos(a), 100 + 42 * math.sin(a)) for a in [math.radians(d) for d in range(-160, 91, 15)]]
    lower = [(x0 + 52 * math.cos(a), 190 + 45 * math.sin(a)) for a in [math.radians(d) for d in range(-90, 161, 15)]]
    return [upper + lower]


def draw(page, strokes) -> None:
    box = page.locator('[data-testid="pad"]').bounding_box()
    sx, sy = box["width"] / 560, box["height"] / 280  # strokes are in the canvas's own 560x280 pixels
    for stroke in strokes:
        page.mouse.move(box["x"] + stroke[0][0] * sx, box["y"] + stroke[0][1] * sy)
        page.mouse.down()
        for px, py in stroke[1:]:
            page.mouse.move(box["x"] + px * sx, box["y"] + py * sy, steps=6)
        page.mouse.up()


def screenshot(page, tmp, name: str) -> None:
    """A test artifact: artifacts/<name>.png in the repository (git-ignored), and a copy in tmp."""
    (REPO / "artifacts").mkdir(exist_ok=True)
    page.screenshot(path=str(REPO / "artifacts" / f"{name}.png"), full_page=True)
    page.screenshot(path=str(tmp / f"{name}.png"), full_page=True)


def bars(page) -> list[dict]:
    """Each probability bar as drawn: its probability (from its label) and its fill's and track's
    rendered widths in CSS pixels."""
    return page.evaluate("""() => [...document.querySelectorAll('#bars .bar')].map(row => ({
        p: parseFloat(row.getAttribute('aria-label').split(': ')[1]) / 100,
        fill: row.querySelector('.fill').getBoundingClientRect().width,
        track: row.querySelector('.track').getBoundingClientRect().width,
        height: row.querySelector('.fill').getBoundingClientRect().height}))""")


def visible(page, testid: str) -> bool:
    return page.locator(f'[data-testid="{testid}"]').is_visible()


def answer_is(page, text: str, timeout: int = 20000) -> None:
    page.wait_for_function("t => document.querySelector('[data-testid=\"prediction\"]').textContent === t",
                           arg=text, timeout=timeout)


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory):
    if not os.path.exists(CHROMIUM) or shutil.which("chromium") is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing: ./setup.sh installs the Debian package 'chromium'")
        pytest.skip("Chromium not installed")
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("browser")
    with Server("--feedback-db", str(tmp / "fb.sqlite3"), "--workers", "1") as server, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp / "profile"), executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--headless", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        try:
            page = context.new_page()
            page.goto(server.url + "/")
            yield page, server, tmp
        finally:
            context.close()


def test_empty_pad_shows_no_correction_row_and_a_drawn_seven_fills_its_bar(browser_page):
    page, _, tmp = browser_page
    page.wait_for_load_state("networkidle")
    assert not visible(page, "correction")  # nothing to correct before there is an answer
    assert page.locator("#bars .bar").count() == 0
    screenshot(page, tmp, "pad-empty")
    draw(page, seven(200))
    answer_is(page, "7")
    assert visible(page, "correction")
    drawn = bars(page)
    assert len(drawn) == 10 and abs(sum(b["p"] for b in drawn) - 1) < 0.01
    for b in drawn:  # each bar's fill is drawn as wide as its share of the track (to a pixel)
        assert b["track"] > 50 and abs(b["fill"] - b["p"] * b["track"]) <= 1.0, drawn
    top = max(drawn, key=lambda b: b["p"])
    assert top["fill"] > 0.9 * top["track"] and top["height"] > 4  # a person sees a full green bar for the 7
    screenshot(page, tmp, "pad-drawn-7")
    page.click('[data-testid="clear"]')
    answer_is(page, "")
    assert not visible(page, "correction") and page.locator("#bars .bar").count() == 0


def test_several_digits_without_read_mode_get_the_hint(browser_page):
    page, _, _ = browser_page
    draw(page, seven(90) + three(400))
    page.wait_for_function("document.querySelector('[data-testid=\"advice\"]').textContent !== ''", timeout=20000)
    assert "Read a number" in page.text_content('[data-testid="advice"]') and visible(page, "advice")
    page.click('[data-testid="clear"]')
    answer_is(page, "")
    assert page.text_content('[data-testid="advice"]') == ""


def test_docs_render_offline_and_show_the_endpoints(browser_page):
    """/docs with every request beyond the server refused: Swagger UI comes from packaged files."""
    page, server, tmp = browser_page
    context = page.context
    outside: list[str] = []

    def only_the_server(route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    docs = context.new_page()
    docs.route("**/*", only_the_server)
    try:
        docs.goto(server.url + "/docs")
        docs.wait_for_selector(".opblock-summary-path", timeout=20000)
        paths = docs.locator(".opblock-summary-path").all_text_contents()
        for path in ("/v1/predict", "/v1/read", "/v1/predict/batch", "/v1/feedback", "/v1/model", "/healthz"):
            assert any(p.replace("\u200b", "") == path for p in paths), (path, paths)
        assert outside == [], outside
        screenshot(docs, tmp, "docs-offline")
    finally:
        docs.close()


def test_draw_seven_and_three_answered_live_then_clear(browser_page):
    page, _, _ = browser_page
    draw(page, seven(200))
    answer_is(page, "7")  # no button pressed: the answer follows the drawing
    assert page.locator("#bars .bar").count() == 10
    assert "confidence" in page.text_content("#confidence")
    assert page.locator("#seen-box").is_visible()
    page.click('[data-testid="clear"]')
    answer_is(page, "")
    draw(page, three(265))
    answer_is(page, "3")
    page.keyboard.press("Escape")  # the keyboard clears too
    answer_is(page, "")


def test_undo(browser_page):
    page, _, _ = browser_page
    draw(page, seven(200))
    answer_is(page, "7")
    draw(page, [[(420, 40), (420, 240)]])  # a stray stroke far to the right
    page.wait_for_timeout(600)
    page.click('[data-testid="undo"]')
    answer_is(page, "7")
    page.click('[data-testid="clear"]')


def test_upload_a_photo(browser_page, mnist):
    page, _, tmp = browser_page
    _, (x, y) = mnist
    photo = tmp / "digit.png"
    photo.write_bytes(png(canvas(x[3], 400)))
    page.set_input_files('[data-testid="upload"]', str(photo))
    answer_is(page, str(y[3]))
    page.click('[data-testid="clear"]')
    answer_is(page, "")


def test_read_a_two_digit_number_with_boxes_and_correct_it(browser_page):
    page, server, tmp = browser_page
    page.check('[data-testid="mode"]')
    draw(page, seven(90) + three(400))
    answer_is(page, "73")
    page.wait_for_function("document.getElementById('overlay').dataset.boxes === '2'", timeout=10000)
    assert visible(page, "correction") and page.text_content('[data-testid="advice"]') == ""
    screenshot(page, tmp, "pad-read-73")
    # "wrong? it is a ..." -> one correction per digit box
    page.fill('[data-testid="correction-input"]', "71")
    page.click('[data-testid="correction-send"]')
    page.wait_for_function("document.querySelector('[data-testid=\"correction-status\"]').textContent === "
                           "'thanks, saved'", timeout=10000)
    page.uncheck('[data-testid="mode"]')
    page.click('[data-testid="clear"]')
    draw(page, seven(200))
    answer_is(page, "7")
    page.fill('[data-testid="correction-input"]', "1")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('[data-testid=\"correction-status\"]').textContent === "
                           "'thanks, saved'", timeout=10000)
    rows = sqlite3.connect(tmp / "fb.sqlite3").execute(
        "SELECT label, predicted, user FROM feedback ORDER BY id").fetchall()
    assert rows == [(7, 7, "pad"), (1, 3, "pad"), (1, 7, "pad")]


def test_fits_a_phone_screen_and_drawing_does_not_scroll(browser_page):
    page, _, tmp = browser_page
    page.set_viewport_size({"width": 375, "height": 740})
    try:
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        assert page.locator('[data-testid="pad"]').bounding_box()["width"] <= 360
        assert page.evaluate("getComputedStyle(document.getElementById('pad')).touchAction") == "none"
        page.evaluate("window.scrollTo(0, 0)")
        draw(page, seven(200))
        answer_is(page, "7")
        assert page.evaluate("window.scrollY") == 0
        drawn = bars(page)  # the bars still show their share on a narrow screen
        assert all(abs(b["fill"] - b["p"] * b["track"]) <= 1.0 for b in drawn) and min(b["track"] for b in drawn) > 50
        for testid in ("clear", "undo", "upload", "correction-send"):  # finger-sized targets
            box = page.locator(f'[data-testid="{testid}"]').bounding_box() if testid != "upload" else \
                page.locator(".upload").bounding_box()
            assert box["height"] >= 44 and box["x"] + box["width"] <= 375, (testid, box)
        screenshot(page, tmp, "pad-phone-7")
    finally:
        page.click('[data-testid="clear"]')
        page.set_viewport_size({"width": 1280, "height": 720})


def test_a_persons_pad_reads_with_their_model_and_tags_their_corrections(browser_page):
    """/?user=ana&model=alice: the pad asks `?model=alice` (a model of --models DIR that reads d as d + 1)
    and its corrections say user ana."""
    page, server, tmp = browser_page
    folder = tmp / "models"
    write_model(folder / "alice" / "model.onnx", shift=1)
    db = tmp / "ana.sqlite3"
    with Server("--models", str(folder), "--feedback-db", str(db), "--workers", "1") as other:
        try:
            page.goto(other.url + "/?user=ana&model=alice")
            draw(page, seven(200))
            answer_is(page, "8")  # alice's model answered, not the bundled one
            page.fill('[data-testid="correction-input"]', "7")
            page.keyboard.press("Enter")
            page.wait_for_function("document.querySelector('[data-testid=\"correction-status\"]').textContent === "
                                   "'thanks, saved'", timeout=10000)
            assert sqlite3.connect(db).execute("SELECT label, predicted, user FROM feedback").fetchall() == \
                [(7, 8, "ana")]
        finally:
            page.goto(server.url + "/")
