"""The Cross-model tab in a real browser: a row of the Explore grid read through a fitted map."""

from __future__ import annotations

import pytest

from tests.ui.conftest import run_prompt

pytestmark = pytest.mark.browser


def test_cross_model_tab_reads_named_tokens_of_the_grid(page):
    page.get_by_role("tab", name="Cross-model").click()
    page.click("#sx-cross-run")  # no grid yet: a clear message, nothing breaks
    page.wait_for_function("() => document.body.innerText.includes('Run a prompt first')", timeout=30_000)
    page.get_by_role("tab", name="Explore").click()
    run_prompt(page, "The Eiffel Tower is in the city of")
    page.get_by_role("tab", name="Cross-model").click()
    page.fill("#sx-cross-tokens textarea", "3,7")
    page.click("#sx-cross-run")
    page.wait_for_function("() => document.querySelector('#sx-cross-summary').innerText.includes('held-out')",
                           timeout=120_000)
    assert "layer 10 of default to layer 10 of default" in page.inner_text("#sx-cross-summary")
    rows = page.evaluate("() => Number(document.querySelector('#sx-cross-table [role=grid]')"
                         ".getAttribute('aria-rowcount')) - 1")
    assert rows == 2
    text = page.inner_text("#sx-cross-table")
    assert "city" in text and "Tower" in text  # tokens 7 and 3 of the prompt
    assert page.requests.foreign() == []
