"""The Explore tab in a real browser: type, run, click cells, interpret a row, download."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import pytest

from tests.ui.conftest import click_cell, overlay_value, run_prompt

pytestmark = pytest.mark.browser
PROMPT = "The Eiffel Tower is in the city of"
# Gradio 6's table is virtualised: its row count is on the grid element (header row included).
TABLE_ROWS_JS = "(Number(document.querySelector('#sx-table [role=grid]').getAttribute('aria-rowcount')) - 1)"
ASSETS = Path(__file__).resolve().parents[2] / "assets"


def details(page) -> dict:
    return page.evaluate(
        """() => { const c = document.querySelector('#sx-details .sx-cell');
        const i = document.querySelector('#sx-details .sx-interp');
        return c ? {layer: Number(c.dataset.layer), token: Number(c.dataset.token),
                    complete: i ? i.dataset.complete : null, text: i ? i.innerText : ''} : null; }""")


def wait_complete(page, layer: int, token: int) -> dict:
    page.wait_for_function(
        """([l, t]) => { const c = document.querySelector('#sx-details .sx-cell');
        const i = document.querySelector('#sx-details .sx-interp');
        return c && Number(c.dataset.layer) === l && Number(c.dataset.token) === t && i && i.dataset.complete === '1'; }""",
        arg=[layer, token], timeout=90_000)
    return details(page)


def screenshot(page, name: str) -> None:
    path = Path(os.environ.get("SELFIE_SCREENSHOT_DIR", "/tmp")) / name
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("SELFIE_UPDATE_SCREENSHOTS") == "1":
        ASSETS.mkdir(exist_ok=True)
        shutil.copy(path, ASSETS / name)


def test_click_a_named_cell_interprets_exactly_that_cell(page):
    run_prompt(page, PROMPT)
    ticks = page.evaluate("() => document.querySelector('#sx-grid .sx-plot').layout.xaxis.ticktext")
    assert ticks[7].strip() == "city" and len(ticks) == 9
    assert overlay_value(page, 15, 7) is None
    click_cell(page, 15, 7)
    got = wait_complete(page, 15, 7)
    assert got["text"].strip(), "the details panel shows an empty interpretation"
    page.wait_for_function("() => { const gd = document.querySelector('#sx-grid .sx-plot');"
                           " const tr = gd.data.find(d => d.name === 'relevancy'); return tr && tr.z[15][7] !== null; }",
                           timeout=30_000)
    z, hover = overlay_value(page, 15, 7)
    assert z >= 0 and got["text"].strip()[:20] in hover.replace("<br>", " ")
    # Only that cell was interpreted.
    filled = page.evaluate("() => document.querySelector('#sx-grid .sx-plot').data.find(d => d.name === 'relevancy')"
                           ".z.flat().filter(v => v !== null).length")
    assert filled == 1
    screenshot(page, "explore_click.png")
    assert page.requests.foreign() == []


def test_two_quick_clicks_are_both_interpreted(page):
    run_prompt(page, PROMPT)
    click_cell(page, 10, 3)
    click_cell(page, 20, 5)
    for layer, token in ((10, 3), (20, 5)):
        page.wait_for_function(
            "([l, t]) => { const gd = document.querySelector('#sx-grid .sx-plot');"
            " const tr = gd.data.find(d => d.name === 'relevancy'); return tr && tr.z[l][tr.x.indexOf(t)] !== null; }",
            arg=[layer, token], timeout=90_000)
    # Once both jobs have settled, the table lists both cells.
    page.wait_for_function(f"() => {TABLE_ROWS_JS} === 2", timeout=30_000)
    assert overlay_value(page, 10, 3) is not None and overlay_value(page, 20, 5) is not None


def test_interpret_row_fills_the_row_and_csv_has_the_rows_shown(page):
    run_prompt(page, PROMPT)
    click_cell(page, 12, 2)
    wait_complete(page, 12, 2)
    page.click("#sx-row")
    page.wait_for_function(
        "() => { const gd = document.querySelector('#sx-grid .sx-plot');"
        " const tr = gd.data.find(d => d.name === 'relevancy'); return tr && tr.z[12].every(v => v !== null); }",
        timeout=120_000)
    page.wait_for_function("() => document.querySelector('#sx-status').innerText.includes('Done')", timeout=60_000)
    page.wait_for_function(f"() => {TABLE_ROWS_JS} === 9", timeout=30_000)
    shown = page.evaluate(f"() => {TABLE_ROWS_JS}")
    assert shown == 9
    screenshot(page, "explore_row.png")
    page.click("#sx-export")
    page.wait_for_selector("#sx-dl-csv", state="visible", timeout=30_000)
    with page.expect_download() as dl:
        page.click("#sx-dl-csv")
    text = Path(dl.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == shown
    assert {int(r["layer"]) for r in rows} == {12}
    assert sorted(int(r["token"]) for r in rows) == list(range(9))
    assert all(r["interpretation"].strip() for r in rows)
    assert page.requests.foreign() == []


def test_colour_mode_switch_redraws_the_grid(page):
    from tests.ui.conftest import grid_ready, revision

    # A prompt of this test's own: its token identity is not cached by an earlier test, so it is computed
    # here, with its progress bar.
    run_prompt(page, "Colour me: the Eiffel Tower is in the city of")
    assert page.evaluate("() => document.querySelector('#sx-grid .sx-plot').data[0].name") == "logit-lens confidence"
    rev = revision(page)
    page.click("#sx-colour input")
    page.locator("ul[role=listbox] li", has_text="token identity").first.click()
    # Token identity is computed once per grid, with its progress under the grid's buttons.
    page.wait_for_selector("#sx-job-progress .sx-job[data-state=done]", timeout=180_000)
    grid_ready(page, rev)
    data = page.evaluate("() => document.querySelector('#sx-grid .sx-plot').data[0]")
    assert data["name"] == "token identity"
    values = {v for row in data["z"] for v in row}
    assert values <= {0, 1} and 1 in values  # hits where the Patchscope names the model's next token
    assert data["z"][30] == [1] * len(data["x"])  # the last row always names it
