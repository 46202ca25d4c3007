"""The Concepts tab in a real browser: train a shipped concept, colour the grid by it, steer, revert."""

from __future__ import annotations

import pytest

from tests.ui.test_explore_browser import screenshot

pytestmark = pytest.mark.browser


def test_train_colour_and_steer_a_shipped_concept(page):
    page.get_by_role("tab", name="Concepts").click()
    page.click("#sx-c-train")  # the default: the shipped negative_sentiment set
    page.wait_for_function("() => document.querySelector('#sx-c-status').innerText.includes('Trained')",
                           timeout=300_000)
    status = page.inner_text("#sx-c-status")
    assert "negative_sentiment" in status and "31 layers" in status
    page.wait_for_function("() => document.querySelector('#sx-c-readings').innerText.includes('layer')",
                           timeout=120_000)

    # A typed prompt gets its own grid here; the Explore grid is left as it is (this page has none).
    page.fill("#sx-c-cprompt textarea", "The food was cold and the waiter was rude, but the view was lovely.")
    page.click("#sx-c-colour")
    page.wait_for_function("() => { const gd = document.querySelector('#sx-c-grid .sx-plot');"
                           " return gd && gd.dataset.ready === '1' && gd.data && gd.data.length > 0; }",
                           timeout=120_000)
    base = page.evaluate("() => document.querySelector('#sx-c-grid .sx-plot').data[0]")
    assert base["name"] == "concept: negative_sentiment"
    values = [v for row in base["z"] for v in row if v is not None]
    assert len(values) == 31 * len(base["x"]) and all(0.0 <= v <= 1.0 for v in values)
    # The last token of a negative-then-positive sentence: the hover shows the probability drawn.
    z = base["z"][16][-1]
    assert f"P(negative_sentiment) = {z:.3f}" in base["text"][16][-1]
    screenshot(page, "concept_colour.png")
    assert page.evaluate("() => { const gd = document.querySelector('#sx-grid .sx-plot');"
                         " return !gd.data || gd.data.length === 0; }")  # Explore untouched

    page.click("#sx-c-steer")
    page.wait_for_function("() => document.querySelector('#sx-c-steer-status').innerText.includes('applied to your')",
                           timeout=180_000)
    before = page.input_value("#sx-c-before textarea")
    after = page.input_value("#sx-c-after textarea")
    fixed = page.input_value("#sx-c-fixed textarea")
    assert before.strip() and after.strip() and fixed.strip()
    assert after != before  # what the user sees: the steered continuation is another text
    assert "GCAV" in page.inner_text("#sx-c-steer-status")
    rows = page.evaluate("() => Number(document.querySelector('#sx-c-eps [role=grid]').getAttribute('aria-rowcount'))")
    assert rows > 3  # prefill and decoding steps
    screenshot(page, "concept_steer.png")

    page.click("#sx-c-revert")
    page.wait_for_function("() => document.querySelector('#sx-c-steer-status').innerText.includes('Reverted')")

    # Several concepts: train formality, steer it while also holding negative sentiment at most 0.5.
    page.click("#sx-c-set input")
    page.locator("ul[role=listbox] li", has_text="formality").first.click()
    page.click("#sx-c-train")
    page.wait_for_function("() => document.querySelector('#sx-c-status').innerText.includes('Trained **formality')"
                           " || document.querySelector('#sx-c-status').innerText.includes('Trained formality')",
                           timeout=300_000)
    page.locator("#sx-c-also label", has_text="negative_sentiment").first.click()
    page.click("#sx-c-steer")
    page.wait_for_function("() => document.querySelector('#sx-c-steer-status').innerText.includes('largest step')",
                           timeout=180_000)
    assert "formality" in page.inner_text("#sx-c-steer-status")
    assert "negative_sentiment" in page.inner_text("#sx-c-steer-status")
    header = page.inner_text("#sx-c-eps")
    assert "eps formality" in header and "eps negative_sentiment" in header
    page.click("#sx-c-revert")
    page.wait_for_function("() => document.querySelector('#sx-c-steer-status').innerText.includes('Reverted')")

    # Bad input: one sentence in the page, no traceback.
    page.fill("#sx-c-layers textarea", "77")
    page.click("#sx-c-steer")
    page.wait_for_function("() => document.body.innerText.includes('out of range')", timeout=60_000)
    assert "Traceback" not in page.inner_text("body")
    assert page.requests.foreign() == []
