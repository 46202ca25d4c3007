"""A class demo at 1366 x 768, as a new user would run it, start to finish, in one page without a reload.

Each step checks what the person sees: where things are on the screen, the banner's words, the grid's
tokens and colours, the link's HTTP answer, the job's count and time left. The numbers in brackets name
the problems this script guards against:
(1) a share link that does not open, or opens without the selected cell and colours;
(2) a gallery entry opened after colouring by a concept breaking the page;
(3) "Colour the grid by" doing nothing on a freshly opened page;
(4) concept steering active with nothing saying so;
(5) the Concepts tab's colouring replacing Explore's grid, and its concepts missing from Explore's menu;
(6) the grid and its progress not on the first screen;
(7) a whole-grid job with no time left until cells are done, a stop that loses the count, a resume that
    starts again from zero;
(8) a projector view that leaves the grid's own text small;
(10) a wide grid losing its layer axis when scrolled sideways, and a toolbar over the top-right cells;
(11) the relevancy colour bar after a revert; a probe's accuracy without chance level or interval.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import time
from pathlib import Path

import httpx
import pytest

from tests.ui.conftest import grid_ready, revision
from tests.ui.test_explore_browser import screenshot
from tests.ui.test_explore_layout_browser import prompt_of, tokenizer

pytestmark = pytest.mark.browser
W, H = 1366, 768
PLOT = "document.querySelector('#sx-grid .sx-plot')"
# Ten per side, the least the form accepts: every 4th is held out, so 2 + 2 prompts score the probes.
JOY = ["I love this, it is wonderful.", "What a great day, I am so happy.", "This is the best meal I have had.",
       "She smiled warmly at the lovely gift.", "The concert was fantastic and joyful.",
       "I adore my kind and caring friends.", "Such a beautiful, delightful garden.", "We had a brilliant, fun holiday.",
       "The film was excellent and moving.", "He was thrilled with the superb result."]
GLOOM = ["I hate this, it is awful.", "What a terrible day, I am so sad.", "This is the worst meal I have had.",
         "She frowned at the ugly broken gift.", "The concert was dreadful and boring.",
         "I despise my cruel and selfish boss.", "Such an ugly, depressing garden.", "We had a miserable, painful holiday.",
         "The film was horrible and dull.", "He was furious with the poor result."]
TWELVE = "The quick brown fox jumps over the lazy dog near the river"
GALLERY = Path(__file__).resolve().parents[2] / "explorer" / "data" / "gallery"


def entry(name: str) -> dict:
    """A gallery file, read here independently of the app."""
    return json.loads((GALLERY / f"{name}.json").read_text(encoding="utf-8"))


def box(page, selector: str) -> dict:
    b = page.evaluate("s => { const r = document.querySelector(s).getBoundingClientRect();"
                      " return {top: r.top, bottom: r.bottom, left: r.left, right: r.right}; }", selector)
    return b


def in_view(b: dict) -> bool:
    return b["top"] >= 0 and b["bottom"] <= H and b["left"] >= 0 and b["right"] <= W and b["bottom"] > b["top"]


def no_error_shown(page) -> None:
    """No error badge on any output and no error notice: the page never broke."""
    assert page.locator("[data-testid='status-tracker'] .error").count() == 0
    assert page.locator(".toast-body.error").count() == 0


def pick(page, selector: str, text: str) -> None:
    page.click(f"{selector} input")
    page.locator("ul[role=listbox] li", has_text=text).first.click()


def base_name(page) -> str:
    return page.evaluate(f"() => {PLOT}.data[0].name")


def details_cell(page):
    return page.evaluate("() => { const c = document.querySelector('#sx-details .sx-cell');"
                         " return c ? [Number(c.dataset.layer), Number(c.dataset.token)] : null; }")


def open_gallery_entry(page, title: str, prompt: str) -> None:
    before = revision(page)
    pick(page, "#sx-gallery-pick", title)
    grid_ready(page, before)
    page.wait_for_function("p => document.querySelector('#sx-prompt textarea').value === p", arg=prompt,
                           timeout=30_000)


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, written out here from its textbook formula."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def job(page):
    return page.evaluate("() => { const j = document.querySelector('#sx-job-progress .sx-job'); return j ?"
                         " {state: j.dataset.state, done: Number(j.dataset.done), total: Number(j.dataset.total),"
                         " credited: Number(j.dataset.credited), left: j.dataset.leftS} : null; }")


def test_a_class_demo_at_1366x768_runs_start_to_finish_without_a_reload(browser, app_demo, tmp_path):
    url = app_demo.sx_url
    fact = entry("01_fact")
    context = browser.new_context(viewport={"width": W, "height": H})
    page = context.new_page()
    t0 = time.monotonic()
    page.goto(url)
    page.wait_for_selector("#sx-page-loaded [data-loaded='1']", state="attached", timeout=60_000)
    grid_ready(page)
    print(f"first gallery entry drawn {time.monotonic() - t0:.2f} s after the page was asked for")
    page.evaluate("() => { window.sxSamePage = 1; }")  # gone if the page reloads
    assert page.input_value("#sx-prompt textarea") == fact["prompt"]
    assert page.evaluate(f"() => {PLOT}.layout.xaxis.ticktext.length") == len(
        tokenizer(app_demo).encode(fact["prompt"], add_special_tokens=True))

    # (6) Grid first: the prompt, the grid's buttons, its progress line and the whole grid are on the first screen.
    for selector in ("#sx-prompt", "#sx-run", "#sx-all", "#sx-stop", "#sx-colour", "#sx-job-progress",
                     "#sx-grid .sx-plot", "#sx-details .sx-cell"):
        assert in_view(box(page, selector)), selector
    assert box(page, "#sx-job-progress")["bottom"] <= box(page, "#sx-grid .sx-plot")["top"]  # progress above the grid
    assert box(page, "#sx-settings")["top"] >= box(page, "#sx-grid .sx-plot")["bottom"]  # settings folded below
    assert not page.is_visible("#sx-max-new")
    # (10) No toolbar over the grid: the top-right cell is the grid's own.
    assert page.locator("#sx-grid .modebar").count() == 0
    screenshot(page, "classroom_first_screen.png")

    # (3) On the freshly opened page the colour menu works at once.
    before = revision(page)
    pick(page, "#sx-colour", "rank of the final prediction")
    page.wait_for_function(f"() => {PLOT}.data[0].name === 'final-prediction rank'", timeout=15_000)
    grid_ready(page, before)
    assert "ranks" in page.inner_text("#sx-colour-help")

    # Two gallery entries; the second stays open and one of its cells is selected (a stored reading).
    pun = entry("05_pun")
    open_gallery_entry(page, pun["gallery"]["title"][:15], pun["prompt"])
    multihop = entry("02_multihop")
    open_gallery_entry(page, multihop["gallery"]["title"][:20], multihop["prompt"])
    assert details_cell(page) == multihop["gallery"]["selected"]
    assert base_name(page) == "final-prediction rank"  # the colour mode stays

    # (1) "Share a link to this view": the page's own address; it answers 200 and opens the same view.
    page.click("#sx-share-link")
    page.wait_for_function("() => { const t = document.querySelector('#sx-link textarea, #sx-link input');"
                           " return t && t.value.includes('?session='); }", timeout=30_000)
    link = page.evaluate("() => document.querySelector('#sx-link textarea, #sx-link input').value")
    assert re.fullmatch(re.escape(url) + r"/\?session=[0-9a-f]{16}", link), link
    answer = httpx.get(link, timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/html")
    other = browser.new_context(viewport={"width": W, "height": H})
    shared = other.new_page()
    shared.goto(link)
    shared.wait_for_selector("#sx-page-loaded [data-loaded='1']", state="attached", timeout=60_000)
    grid_ready(shared)
    shared.wait_for_function(f"() => {PLOT}.data[0].name === 'final-prediction rank'", timeout=30_000)
    assert details_cell(shared) == multihop["gallery"]["selected"]
    assert shared.input_value("#sx-prompt textarea") == multihop["prompt"]
    assert shared.title() == "SelfIE Explorer"
    assert shared.input_value("#sx-colour input") == "rank of the final prediction"
    no_error_shown(shared)
    other.close()

    # (5) A concept taught from typed prompts (the least the form takes) joins Explore's colour menu and
    # colours the Explore grid of the current prompt; (11) its accuracy comes with chance level and interval.
    page.get_by_role("tab", name="Concepts").click()
    page.get_by_label("type prompts").check()
    page.fill("#sx-c-name textarea", "joy")
    page.fill("#sx-c-pos textarea", "\n".join(JOY))
    page.fill("#sx-c-neg textarea", "\n".join(GLOOM))
    page.click("#sx-c-train")
    page.wait_for_function("() => document.querySelector('#sx-c-status').innerText.includes('Trained')",
                           timeout=300_000)
    status = page.inner_text("#sx-c-status")
    acc = float(re.search(r"Held-out accuracy at layer \d+: ([0-9.]+)", status).group(1))  # type: ignore[union-attr]
    lo, hi = wilson(round(acc * 4), 4)
    assert f"95% interval {lo:.2f}–{hi:.2f} on 4 held-out prompts" in status, status
    assert "chance level 0.50" in status and "Only 4 held-out prompts" in status
    page.click("#sx-c-colour")  # the prompt box is blank: the Explore grid of its current prompt
    page.wait_for_function("() => document.querySelector('#sx-c-colour-msg').innerText.includes('Explore grid')",
                           timeout=60_000)
    page.get_by_role("tab", name="Explore").click()
    page.wait_for_function(f"() => {PLOT}.data[0].name === 'concept: joy'", timeout=30_000)
    assert page.input_value("#sx-prompt textarea") == multihop["prompt"]  # Explore's own prompt, untouched
    assert page.evaluate(f"() => {PLOT}.layout.xaxis.ticktext.length") == len(
        tokenizer(app_demo).encode(multihop["prompt"], add_special_tokens=True))
    assert page.input_value("#sx-colour input") == "concept: joy (probe)"

    # (4) Steering: the banner names it on every tab, and Explore says the grid was captured with it.
    page.get_by_role("tab", name="Concepts").click()
    page.fill("#sx-c-ntokens input", "3")
    page.click("#sx-c-steer")
    page.wait_for_selector("#sx-banner-body[data-steering='1']", timeout=180_000)
    for tab in ("Control", "Compare", "Explore"):
        page.get_by_role("tab", name=tab).click()
        assert page.is_visible("#sx-banner-body .sx-revert-part[data-part='steering']"), tab
        assert "Concept steering is active" in page.inner_text("#sx-edit-banner") and "GCAV" in page.inner_text(
            "#sx-edit-banner")
    page.wait_for_function("() => document.querySelector('#sx-status').innerText.includes('captured again with GCAV')",
                           timeout=60_000)
    assert "changed model" in page.title()
    screenshot(page, "steering_banner.png")

    # (2) A gallery entry opened now: no error anywhere, the grid on the entry's prompt, the concept colouring
    # and the steering kept, the colour menu still opens.
    number = entry("06_number")
    open_gallery_entry(page, number["gallery"]["title"][:15], number["prompt"])
    page.wait_for_timeout(300)
    no_error_shown(page)
    assert base_name(page) == "concept: joy"
    assert page.evaluate(f"() => {PLOT}.layout.xaxis.ticktext.length") == len(
        tokenizer(app_demo).encode(number["prompt"], add_special_tokens=True))
    assert "GCAV" in page.inner_text("#sx-status")
    page.click("#sx-colour input")
    page.wait_for_selector("ul[role=listbox] li", timeout=10_000)
    page.keyboard.press("Escape")

    # Revert from the banner: the banner goes, the grid is the stock model's again, (11) both colour bars show.
    page.click("#sx-banner-body .sx-revert-part[data-part='steering']")
    page.wait_for_selector("#sx-banner-body[data-active='0']", state="attached", timeout=30_000)
    page.wait_for_function("() => document.querySelector('#sx-status').innerText.includes('with the stock model')",
                           timeout=60_000)
    assert page.title() == "SelfIE Explorer"
    page.wait_for_function("() => document.querySelectorAll('#sx-grid .colorbar').length === 2", timeout=10_000)

    # (7) A 12-token whole grid: its progress in view with the grid, a time left before any batch is done,
    # Stop keeps what was read (the side panel lists exactly that), and the next run credits it.
    page.get_by_text("Interpretation settings").click()
    box_new = page.locator("#sx-max-new input[type=number]")
    box_new.fill("3")
    box_new.press("Enter")
    page.get_by_text("Interpretation settings").click()
    page.evaluate("() => window.scrollTo(0, 0)")  # back to the top, where the prompt is
    before = revision(page)
    page.fill("#sx-prompt textarea", TWELVE)
    page.click("#sx-run")
    grid_ready(page, before)
    assert page.evaluate(f"() => {PLOT}.data[0].x.length") == 12
    page.click("#sx-all")
    page.wait_for_function("() => { const j = document.querySelector('#sx-job-progress .sx-job');"
                           " return j && j.dataset.state === 'running' && j.dataset.leftS !== ''; }", timeout=60_000)
    started = time.monotonic()
    first = job(page)
    assert first["total"] == 31 * 12 and first["done"] < 64  # an estimate before the first batch was read
    assert in_view(box(page, "#sx-job-progress progress")) and in_view(box(page, "#sx-grid .sx-plot"))
    screenshot(page, "whole_grid_progress.png")
    estimates = [float(first["left"])]
    while job(page)["done"] < 64 and time.monotonic() - started < 300:
        page.wait_for_timeout(500)
        now = job(page)
        if now["state"] == "running" and now["left"]:
            estimates.append(float(now["left"]))
    done_at = job(page)
    page.click("#sx-stop")
    page.wait_for_selector("#sx-job-progress .sx-job[data-state=stopped]", timeout=120_000)
    elapsed = time.monotonic() - started
    stopped = job(page)
    # Sensible from the start: the first estimate of the whole job's length is within a factor of 5 of the one
    # its measured speed gives, and no later estimate jumps to more than twice the one before.
    measured_total = elapsed * stopped["total"] / max(1, stopped["done"])
    assert measured_total / 5 < estimates[0] < measured_total * 5, (estimates, measured_total, done_at)
    assert all(b < 2 * a + 5 for a, b in itertools.pairwise(estimates)), estimates
    listed = page.evaluate("() => { const l = document.querySelector('#sx-details .sx-list');"
                           " return [Number(l.dataset.read),"
                           " [...l.querySelectorAll('.sx-reading')].filter(e => e.dataset.complete === '1').length]; }")
    assert stopped["done"] >= 64 and listed == [stopped["done"], min(stopped["done"], 160)]
    assert f"Readings of {stopped['done']} of 372 cells read" in page.inner_text("#sx-details")
    page.click("#sx-all")
    page.wait_for_selector("#sx-job-progress .sx-job[data-state=running]", timeout=60_000)
    resumed = job(page)
    assert resumed["credited"] == stopped["done"] and resumed["done"] >= stopped["done"]
    assert f"({stopped['done']} read before)" in page.inner_text("#sx-job-progress")
    page.click("#sx-stop")
    page.wait_for_selector("#sx-job-progress .sx-job[data-state=stopped], #sx-job-progress .sx-job[data-state=done]",
                           timeout=120_000)

    # (8) Projector view: the grid's own text (ticks, colour bar numbers, axis titles, hovers) and the grid grow.
    def grid_text() -> dict:
        return page.evaluate(f"""() => {{ const L = {PLOT}._fullLayout;
          const px = s => {{ const e = document.querySelector(s);
            return e ? parseFloat(getComputedStyle(e).fontSize) : 0; }};
          return {{tick: px('#sx-grid .xtick text'), ytick: px('#sx-grid .ytick text'),
                  bar: px('#sx-grid .colorbar .cbaxis text'),
                  title: px('#sx-grid .g-xtitle text'), hover: L.hoverlabel.font.size, height: L.height,
                  col: Number({PLOT}.dataset.colPx)}}; }}""")
    small = grid_text()
    before = revision(page)
    page.click("#sx-projector input")
    grid_ready(page, before)
    large = grid_text()
    for key in ("tick", "ytick", "bar", "title", "hover", "height", "col"):
        assert large[key] > small[key] * 1.3, (key, small, large)
    # Upright labels never run into the axis title below them (read once the redraws the new size sets off
    # have settled: the same positions twice, half a second apart).
    def label_bottom_and_title_top() -> tuple[float, float]:
        return tuple(page.evaluate(
            "() => [Math.max(...[...document.querySelectorAll('#sx-grid .xtick text')]"
            ".map(t => t.getBoundingClientRect().bottom)),"
            " document.querySelector('#sx-grid .g-xtitle text').getBoundingClientRect().top]"))

    seen, settled = label_bottom_and_title_top(), False
    for _ in range(20):
        page.wait_for_timeout(500)
        now = label_bottom_and_title_top()
        if now == seen:
            settled = True
            break
        seen = now
    assert settled, "the grid kept redrawing"
    lowest, title_top = seen
    assert lowest <= title_top
    screenshot(page, "projector.png")

    # (10) A 60-token prompt scrolled sideways keeps its layer axis in view.
    before = revision(page)
    page.fill("#sx-prompt textarea", prompt_of(tokenizer(app_demo), 60))
    page.click("#sx-run")
    grid_ready(page, before)
    page.evaluate("() => { const s = document.querySelector('#sx-grid .sx-scroll'); s.scrollLeft = s.scrollWidth; }")
    page.wait_for_selector("#sx-grid .sx-yaxis[data-shown='1']", timeout=10_000)
    scroller = box(page, "#sx-grid .sx-scroll")
    ticks = page.evaluate("() => [...document.querySelectorAll('#sx-grid .sx-yaxis .sx-ytick')].map(t => {"
                          " const r = t.getBoundingClientRect(); return [t.innerText, r.left, r.right, r.top, r.bottom]; })")
    shown = page.evaluate(f"() => {PLOT}._fullLayout.yaxis.tickvals.map(String)")
    assert [t[0] for t in ticks] == shown and "0" in shown
    for _text, left, right, top, bottom in ticks:
        assert scroller["left"] <= left < right <= scroller["left"] + 120 and 0 <= top < bottom
    assert page.evaluate("() => document.querySelector('#sx-grid .sx-scroll').scrollLeft") > 0
    screenshot(page, "wide_grid_scrolled.png")

    no_error_shown(page)
    assert page.evaluate("() => window.sxSamePage") == 1  # never reloaded
    # (8) The projector view is remembered by this browser: a new page opens in it.
    again = context.new_page()
    again.goto(url + "/?gallery=none")
    again.wait_for_selector("#sx-page-loaded [data-loaded='1']", state="attached", timeout=60_000)
    again.wait_for_function("() => document.body.classList.contains('sx-projector')", timeout=10_000)
    assert again.is_checked("#sx-projector input")
    context.close()
