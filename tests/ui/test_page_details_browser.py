"""Small things a class notices, in a real browser: stored readings shown without recomputing, errors
beside the action, colour modes explained, the guide brought back, plurals."""

from __future__ import annotations

import json

import pytest

from tests.ui.conftest import click_cell, grid_ready, revision, run_prompt
from tests.ui.test_classroom_script_browser import entry, no_error_shown, pick
from tests.ui.test_geometry_browser import hover_text

pytestmark = pytest.mark.browser


def test_clicking_a_stored_gallery_cell_shows_its_reading_without_computing_it(gallery_page, app_demo):
    page = gallery_page
    fact = entry("01_fact")
    scheduler = app_demo.sx_registry.get("default").interpreter.scheduler
    selected = tuple(fact["gallery"]["selected"])
    other = next(r for r in fact["results"] if (r["layer"], r["token"]) != selected)
    batches = scheduler.batches_run
    click_cell(page, other["layer"], other["token"])
    page.wait_for_function(
        "([l, t]) => { const c = document.querySelector('#sx-details .sx-cell'); const i = document.querySelector("
        "'#sx-details .sx-interp'); return c && Number(c.dataset.layer) === l && Number(c.dataset.token) === t"
        " && i && i.dataset.complete === '1'; }", arg=[other["layer"], other["token"]], timeout=30_000)
    assert page.inner_text("#sx-details .sx-interp").strip() == other["interpretation"].strip()
    page.wait_for_timeout(500)
    assert scheduler.batches_run == batches  # the engine read nothing: the stored reading was shown


def test_an_error_shows_beside_the_action_that_caused_it(page):
    page.set_viewport_size({"width": 1366, "height": 768})
    run_prompt(page, "The Eiffel Tower is in the city of")
    page.click("#sx-row")  # no cell selected yet
    page.wait_for_selector("#sx-status .sx-error", timeout=30_000)
    message = page.inner_text("#sx-status")
    assert "Select a cell first" in message
    where = page.evaluate("() => { const m = document.querySelector('#sx-status .sx-error').getBoundingClientRect();"
                          " const b = document.querySelector('#sx-row').getBoundingClientRect();"
                          " return [m.top, m.bottom, b.top]; }")
    assert where[0] >= 0 and where[1] <= 768 and 0 < where[2] - where[1] < 80  # just above the button
    no_error_shown(page)  # no error badge on the outputs, no notice that vanishes


def test_colour_modes_say_what_their_value_means_and_row_0_explains_its_blank(page):
    run_prompt(page, "The Eiffel Tower is in the city of")
    assert "probability (0 to 1)" in page.inner_text("#sx-colour-help")
    before = revision(page)
    pick(page, "#sx-colour", "MLP on-fraction")
    grid_ready(page, before)
    help_text = page.inner_text("#sx-colour-help")
    assert "share of the block's MLP neurons" in help_text and "0 to 1" in help_text and "row 0" in help_text
    assert "no block" in hover_text(page, 0, 3)
    before = revision(page)
    pick(page, "#sx-colour", "log distance")
    grid_ready(page, before)
    assert "natural log of the distance" in page.inner_text("#sx-colour-help")


def test_the_first_run_guide_can_be_brought_back(page):
    assert page.is_visible("#sx-guide-box")
    page.click("#sx-guide-close")
    page.wait_for_selector("#sx-guide-box", state="hidden", timeout=5_000)
    page.get_by_role("tab", name="Control").click()
    page.click("#sx-guide-open")
    page.wait_for_selector("#sx-guide-box", state="visible", timeout=5_000)
    assert page.is_visible("#sx-prompt")  # back on Explore, where the guide lives


def test_importing_one_reading_says_one_result(page, tmp_path):
    data = entry("05_pun")
    data["results"] = data["results"][:1]
    data.pop("gallery")
    path = tmp_path / "one.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with page.expect_file_chooser() as fc:
        page.get_by_text("Share this session").click()
        page.get_by_role("button", name="Import session").click()
    fc.value.set_files(str(path))
    page.wait_for_function("() => document.querySelector('#sx-status').innerText.includes('Imported')",
                           timeout=60_000)
    assert "Imported 1 result for" in page.inner_text("#sx-status")
