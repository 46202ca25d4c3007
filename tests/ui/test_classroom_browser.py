"""Gallery, links, projector view, the edit banner and the model picker, in a real browser."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.ui.conftest import click_cell, grid_ready, revision, run_prompt
from tests.ui.test_explore_browser import screenshot, wait_complete

pytestmark = pytest.mark.browser
GALLERY = Path(__file__).resolve().parents[2] / "explorer" / "data" / "gallery"
DETAILS_JS = """() => { const c = document.querySelector('#sx-details .sx-cell');
  const i = document.querySelector('#sx-details .sx-interp');
  return c ? [Number(c.dataset.layer), Number(c.dataset.token), i ? i.innerText.trim() : ''] : null; }"""
FILLED_JS = """() => { const gd = document.querySelector('#sx-grid .sx-plot'); if (!gd || !gd.data) return -1;
  const tr = gd.data.find(d => d.name === 'relevancy'); return tr ? tr.z.flat().filter(v => v !== null).length : 0; }"""
BANNER_JS = "() => { const b = document.querySelector('#sx-banner-body'); return b ? b.dataset.active : null; }"


def stored(name: str) -> dict:
    """The gallery file, read here independently of the app."""
    data = json.loads((GALLERY / f"{name}.json").read_text(encoding="utf-8"))
    layer, token = data["gallery"]["selected"]
    data["reading"] = next(r["interpretation"] for r in data["results"] if (r["layer"], r["token"]) == (layer, token))
    return data


def wait_details(page, layer: int, token: int, timeout: int = 30_000) -> None:
    page.wait_for_function(f"() => {{ const d = ({DETAILS_JS})(); return d && d[0] === {layer} && d[1] === {token}; }}",
                           timeout=timeout)


@pytest.fixture(scope="module")
def warmed(app_demo):
    """The app warms its first gallery entry at start-up; wait until that is done."""
    from explorer.ui import gallery

    gallery.warm(app_demo.sx_registry).join()
    return app_demo


def test_the_page_opens_on_the_first_gallery_entry_drawn_within_3_s(browser, warmed):
    first = stored("01_fact")
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(warmed.sx_url)
    # The page has opened once Gradio has rendered the app (its own start-up, before any handler runs,
    # took 1-18 s here depending on the machine's load); from then the entry must be drawn within 3 s.
    page.wait_for_selector("#sx-grid", timeout=60_000)
    t0 = time.monotonic()
    layer, token = first["gallery"]["selected"]
    wait_details(page, layer, token, timeout=30_000)
    page.wait_for_function(f"() => ({FILLED_JS})() === {len(first['results'])}", timeout=30_000)
    elapsed = time.monotonic() - t0
    print(f"first gallery entry drawn {elapsed:.2f} s after the app rendered")
    assert elapsed < 3.0
    assert page.evaluate(DETAILS_JS)[2] == first["reading"].strip()
    assert page.input_value("#sx-prompt textarea") == first["prompt"]
    assert first["gallery"]["explanation"][:40] in page.inner_text("#sx-gallery-about")
    screenshot(page, "gallery.png")
    context.close()


def test_a_gallery_link_opens_that_entry(browser, warmed):
    pun = stored("05_pun")
    context = browser.new_context(viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.goto(warmed.sx_url + "/?gallery=05_pun")
    layer, token = pun["gallery"]["selected"]
    wait_details(page, layer, token, timeout=60_000)
    assert page.evaluate(DETAILS_JS)[2] == pun["reading"].strip()
    assert page.input_value("#sx-prompt textarea") == pun["prompt"]
    page.wait_for_function(f"() => ({FILLED_JS})() === {len(pun['results'])}", timeout=10_000)
    context.close()


def test_projector_view_enlarges_text_and_grid_labels(gallery_page, warmed):
    page = gallery_page
    page.wait_for_function(f"() => ({FILLED_JS})() > 0", timeout=60_000)
    size_js = "() => parseFloat(getComputedStyle(document.querySelector('#sx-prompt textarea')).fontSize)"
    tick_js = ("() => parseFloat(getComputedStyle(document.querySelector('#sx-grid .xtick text')).fontSize)")
    before, tick_before = page.evaluate(size_js), page.evaluate(tick_js)
    rev = revision(page)
    page.click("#sx-projector input")
    page.wait_for_function("() => document.body.classList.contains('sx-projector')", timeout=5_000)
    grid_ready(page, rev)  # the grid redraws its own text larger
    assert page.evaluate(size_js) == 22.0 and before < 22.0
    assert page.evaluate(tick_js) == 18.0 and tick_before < 18.0
    page.click("#sx-projector input")
    page.wait_for_function("() => !document.body.classList.contains('sx-projector')", timeout=5_000)
    assert page.evaluate(size_js) == before


def test_import_with_an_edit_then_revert_and_load_are_reflected_at_once(gallery_page, warmed, tmp_path):
    page = gallery_page
    from explorer.methods.control import Edit

    edited = stored("08_control_edit")
    page.wait_for_function(f"() => ({FILLED_JS})() > 0", timeout=60_000)
    assert page.evaluate(BANNER_JS) == "0"
    # Import: the prompt box is filled, Control says the edit is applied, the banner shows it.
    page.get_by_text("Share this session").click()  # the accordion renders its buttons when opened
    page.locator("input[type=file][accept*='.json']").first.set_input_files(str(GALLERY / "08_control_edit.json"))
    edit_id = edited["edit"]["edit_id"]
    page.wait_for_function("() => document.querySelector('#sx-banner-body').dataset.active === '1'", timeout=60_000)
    assert page.evaluate("() => document.querySelector('#sx-banner-body').dataset.edit") == edit_id
    page.wait_for_function(f"() => document.querySelector('#sx-prompt textarea').value === {json.dumps(edited['prompt'])}",
                           timeout=10_000)
    page.get_by_role("tab", name="Control").click()
    page.wait_for_function(f"() => document.querySelector('#sx-edit-status').innerText.includes('{edit_id}')"
                           " && document.querySelector('#sx-edit-status').innerText.includes('applied to your')",
                           timeout=10_000)
    assert page.is_visible("#sx-banner-body")  # the banner shows on the Control tab too
    screenshot(page, "edit_banner.png")
    # Revert: the banner goes, the grid is captured again, a click reads the stock model.
    page.click("#sx-revert")
    page.wait_for_function(f"() => ({BANNER_JS})() === '0'", timeout=20_000)
    page.get_by_role("tab", name="Explore").click()
    page.wait_for_function("() => document.querySelector('#sx-status').innerText.includes('captured again')",
                           timeout=60_000)
    assert page.evaluate(f"() => ({FILLED_JS})()") == 0  # the edited readings no longer colour the grid
    page.wait_for_function("() => document.querySelector('#sx-table').innerText.includes('[edit edit-')",
                           timeout=10_000)  # the edited readings stay listed, marked with their edit
    click_cell(page, 12, 3)
    got = wait_complete(page, 12, 3)
    assert got["text"].strip() and "elephant" not in got["text"].lower()
    assert page.evaluate("() => document.querySelector('#sx-details .sx-interp').dataset.variant") == ""
    # Loading the edit in Control: banner back, and a click reads the edited meaning again.
    path = tmp_path / "edit.safetensors"
    Edit.from_base64(edited["edit"]["safetensors_base64"]).save(path)
    page.get_by_role("tab", name="Control").click()
    page.locator("input[type=file][accept*='.safetensors']").first.set_input_files(str(path))
    page.wait_for_function(f"() => ({BANNER_JS})() === '1'", timeout=60_000)
    page.get_by_role("tab", name="Explore").click()
    page.wait_for_function("() => document.querySelector('#sx-status').innerText.includes('captured again')",
                           timeout=60_000)
    click_cell(page, 16, 3)
    got = wait_complete(page, 16, 3)
    assert "elephant" in got["text"].lower()
    assert page.evaluate("() => document.querySelector('#sx-details .sx-interp').dataset.variant") == edit_id


def test_a_failed_model_load_keeps_the_working_model(gallery_page, warmed):
    page = gallery_page
    page.wait_for_function(f"() => ({FILLED_JS})() > 0", timeout=60_000)
    before = page.input_value("#sx-model input")
    box = page.locator("#sx-model input")
    box.fill("nonexistent-org/nonexistent-model-xyz")
    box.press("Enter")
    page.click("#sx-load")
    page.wait_for_function("() => document.querySelector('#sx-status').innerText.includes('Still using')",
                           timeout=120_000)
    assert page.input_value("#sx-model input") == before
    status = page.inner_text("#sx-status")
    assert "nonexistent-org/nonexistent-model-xyz" in status and "Traceback" not in status
    run_prompt(page, "Paris is the capital of")
    page.wait_for_function("() => document.querySelector('#sx-status').innerText.includes('tokens ×')",
                           timeout=60_000)
