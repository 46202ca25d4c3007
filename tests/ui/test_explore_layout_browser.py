"""Prompts of any length draw and read in a real browser: one token, 65 tokens, the chat wrap;
the row's readings listed beside the grid; a whole-grid job's progress bar next to its buttons."""

from __future__ import annotations

import itertools

import pytest

from tests.ui.conftest import click_cell, open_page, run_prompt

pytestmark = pytest.mark.browser
PLOT = "document.querySelector('#sx-grid .sx-plot')"


def tokenizer(app_demo):
    return app_demo.sx_registry.get("default").lm.tokenizer


def prompt_of(tok, n: int) -> str:
    """A plain-English prompt of exactly ``n`` tokens (the app adds no special token)."""
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "small",
             "birds", "sing", "about", "rivers", "mountains", "cities", "music", "and", "light"]
    text, i = "", 0
    while len(tok.encode(text, add_special_tokens=True)) < n:
        text = (text + " " + words[i % len(words)]).strip()
        i += 1
    assert len(tok.encode(text, add_special_tokens=True)) == n
    return text


def no_error_toast(page) -> None:
    assert page.locator(".toast-body.error, .toast-wrap .error").count() == 0
    assert "Slider minimum" not in page.inner_text("body")


def set_max_new_tokens(page, n: int) -> None:
    page.get_by_text("Interpretation settings").click()
    box = page.locator("#sx-max-new input[type=number]")
    box.fill(str(n))
    box.press("Enter")


def test_a_one_token_prompt_draws(page, app_demo):
    assert len(tokenizer(app_demo).encode("Paris", add_special_tokens=True)) == 1
    run_prompt(page, "Paris")
    x = page.evaluate(f"() => {PLOT}.data[0].x")
    assert x == [0]
    page.wait_for_timeout(500)
    no_error_toast(page)
    click_cell(page, 15, 0)
    page.wait_for_function("() => { const c = document.querySelector('#sx-details .sx-cell');"
                           " return c && c.dataset.token === '0' && c.dataset.layer === '15'; }", timeout=60_000)


def test_a_65_token_grid_has_readable_labels_and_its_last_token_reachable(page, app_demo):
    text = prompt_of(tokenizer(app_demo), 65)
    run_prompt(page, text)
    x = page.evaluate(f"() => {PLOT}.data[0].x")
    assert len(x) == 65 and x[-1] == 64  # every column drawn: no page holding the last token alone
    boxes = page.evaluate(
        "() => [...document.querySelectorAll('#sx-grid .xtick text')].map(t => { const r = t.getBoundingClientRect();"
        " return [r.left, r.right, r.width]; })")
    assert len(boxes) == 65
    boxes.sort()
    for (_l1, r1, w1), (l2, _r2, _w2) in itertools.pairwise(boxes):
        assert w1 > 0 and r1 <= l2, "tick labels overlap"
    col_px = float(page.evaluate(f"() => {PLOT}.dataset.colPx"))
    assert col_px >= 22
    # The grid is wider than its box and scrolls sideways; scrolled to the end, the last label is in view.
    sizes = page.evaluate("() => { const s = document.querySelector('#sx-grid .sx-scroll');"
                          " return [s.scrollWidth, s.clientWidth]; }")
    assert sizes[0] > sizes[1]
    page.evaluate("() => { const s = document.querySelector('#sx-grid .sx-scroll'); s.scrollLeft = s.scrollWidth; }")
    inside = page.evaluate(
        "() => { const s = document.querySelector('#sx-grid .sx-scroll').getBoundingClientRect();"
        " const ts = [...document.querySelectorAll('#sx-grid .xtick text')];"
        " const r = ts.reduce((a, t) => t.getBoundingClientRect().left > a.left ? t.getBoundingClientRect() : a,"
        " {left: -1e9}); return r.left >= s.left && r.right <= s.right; }")
    assert inside
    click_cell(page, 12, 64)
    page.wait_for_function("() => { const c = document.querySelector('#sx-details .sx-cell');"
                           " return c && c.dataset.token === '64'; }", timeout=60_000)


def test_the_chat_wraps_system_text_can_be_hidden(page, app_demo):
    tok = tokenizer(app_demo)
    rendered = tok.apply_chat_template([{"role": "user", "content": "Paris"}], tokenize=False,
                                       add_generation_prompt=True)
    n_wrapped = len(tok.encode(rendered, add_special_tokens=False))
    page.get_by_label("wrap in chat template").check()
    run_prompt(page, "Paris")
    x = page.evaluate(f"() => {PLOT}.data[0].x")
    labels = page.evaluate(f"() => {PLOT}.layout.xaxis.ticktext")
    assert x[-1] == n_wrapped - 1 and x[0] > 0
    assert labels[0].strip() == "Paris"  # the view starts at the user's first token
    page.get_by_text("Interpretation settings").click()  # the switch is among the folded settings
    page.get_by_label("hide the chat template's system text").uncheck()
    page.wait_for_function(f"() => {PLOT}.data[0].x[0] === 0", timeout=30_000)
    assert len(page.evaluate(f"() => {PLOT}.data[0].x")) == n_wrapped


def test_interpret_row_lists_the_rows_readings_in_order(page):
    set_max_new_tokens(page, 4)
    run_prompt(page, "The Eiffel Tower")
    n = len(page.evaluate(f"() => {PLOT}.data[0].x"))
    click_cell(page, 12, 1)
    page.wait_for_function("() => { const i = document.querySelector('#sx-details .sx-interp');"
                           " return i && i.dataset.complete === '1'; }", timeout=90_000)
    page.click("#sx-row")
    page.wait_for_function(
        "n => { const li = [...document.querySelectorAll('#sx-details .sx-reading')];"
        " return li.length === n && li.every(e => e.dataset.complete === '1'); }", arg=n, timeout=120_000)
    items = page.evaluate("() => [...document.querySelectorAll('#sx-details .sx-reading')].map(e =>"
                          " [Number(e.dataset.layer), Number(e.dataset.token), e.innerText])")
    assert [(layer, token) for layer, token, _ in items] == [(12, t) for t in range(n)]
    assert all("L12" in txt and txt.split("#")[-1].strip() for _l, _t, txt in items)
    # Each reading is the one the grid's hover shows for that cell.
    for _layer, token, txt in items:
        hover = page.evaluate(f"t => {{ const tr = {PLOT}.data.find(d => d.name === 'relevancy');"
                              " return tr.text[12][tr.x.indexOf(t)]; }", token)
        words = hover.split("<br>")[1].strip()
        assert words.split()[0] in txt
    size = page.evaluate("() => parseFloat(getComputedStyle(document.querySelector('#sx-details .sx-rtext')).fontSize)")
    assert size > 16  # larger than the page's body text


def test_whole_grid_progress_bar_is_beside_its_buttons(browser, app_url):
    context, page = open_page(browser, f"{app_url}/?gallery=none", 1366, 768)
    try:
        set_max_new_tokens(page, 4)
        run_prompt(page, "Welcome")  # one token, and a prompt no other test reads: nothing is cached
        page.locator("#sx-all").scroll_into_view_if_needed()
        page.click("#sx-all")
        page.wait_for_selector("#sx-job-progress .sx-job[data-state=running]", timeout=60_000)
        box = page.locator("#sx-job-progress progress").bounding_box()
        button = page.locator("#sx-all").bounding_box()
        assert box is not None and box["height"] > 0
        assert box["y"] >= 0 and box["y"] + box["height"] <= 768  # in view where the button was clicked
        assert 0 < box["y"] - button["y"] < 120  # right under the buttons
        grid = page.locator("#sx-grid .sx-plot").bounding_box()
        assert grid is not None and box["y"] + box["height"] <= grid["y"]  # and above the grid
        text = page.inner_text("#sx-job-progress")
        assert "/ 31 cells read" in text  # "Welcome" is one token: 31 layers
        # The first cells read are the middle layers'.
        page.wait_for_function(f"() => {{ const tr = {PLOT}.data.find(d => d.name === 'relevancy');"
                               " return tr && tr.z.flat().some(v => v !== null); }", timeout=120_000)
        filled = page.evaluate(f"() => {PLOT}.data.find(d => d.name === 'relevancy').z"
                               ".map((row, l) => row[0] !== null ? l : -1).filter(l => l >= 0)")
        assert 15 in filled and 0 not in filled
        page.click("#sx-stop")
        page.wait_for_selector("#sx-job-progress .sx-job[data-state=stopped], "
                               "#sx-job-progress .sx-job[data-state=done]", timeout=120_000)
    finally:
        context.close()


def test_enter_runs_and_shift_enter_adds_a_line(page):
    box = page.locator("#sx-prompt textarea")
    box.fill("Paris is")
    box.press("Shift+Enter")
    box.type("lovely")
    assert box.input_value() == "Paris is\nlovely"
    page.wait_for_timeout(300)
    assert page.evaluate(f"() => !{PLOT}.data || {PLOT}.data.length === 0")  # nothing ran yet
    box.press("Enter")
    page.wait_for_function(f"() => {PLOT}.dataset.ready === '1' && {PLOT}.data.length > 0", timeout=60_000)
    assert box.input_value() == "Paris is\nlovely"  # Enter ran the prompt and added no newline


def test_template_menu_and_fields_agree(page):
    from explorer.core.prompts import PRESETS

    page.get_by_text("Interpretation settings").click()
    page.click("#sx-preset input")
    page.locator("ul[role=listbox] li", has_text="summarize").first.click()
    page.wait_for_function("t => document.querySelector('#sx-custom-lead textarea').value === t",
                           arg=PRESETS["summarize"].lead_in, timeout=10_000)
    assert page.input_value("#sx-custom-user textarea") == PRESETS["summarize"].user
    page.locator("#sx-custom-lead textarea").type(" briefly")
    page.wait_for_function("() => document.querySelector('#sx-preset input').value === 'custom'", timeout=10_000)
