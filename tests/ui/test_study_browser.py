"""The Cross-model tab in a real browser: a row of the Explore grid read through a fitted map."""

from __future__ import annotations

import pytest

from tests.ui.conftest import open_page, run_prompt
from tests.ui.test_explore_browser import screenshot

pytestmark = pytest.mark.browser


def test_cross_model_tab_reads_named_tokens_of_the_grid(page):
    page.get_by_role("tab", name="Cross-model").click()
    page.click("#sx-cross-run")  # no grid yet: a clear message, nothing breaks
    page.wait_for_function("() => document.body.innerText.includes('Run a prompt first')", timeout=30_000)
    page.locator(".toast-close").first.click()
    page.get_by_role("tab", name="Explore").click()
    run_prompt(page, "The Eiffel Tower is in the city of")
    page.get_by_role("tab", name="Cross-model").click()
    page.fill("#sx-cross-tokens textarea", "3,7")
    page.click("#sx-cross-run")
    page.wait_for_function("() => document.querySelector('#sx-cross-summary').innerText.includes('held-out')",
                           timeout=120_000)
    assert "layer 10 of default to layer 14 of default" in page.inner_text("#sx-cross-summary")
    rows = page.evaluate("() => Number(document.querySelector('#sx-cross-table [role=grid]')"
                         ".getAttribute('aria-rowcount')) - 1")
    assert rows == 2
    text = page.inner_text("#sx-cross-table")
    assert "city" in text and "Tower" in text  # tokens 7 and 3 of the prompt
    screenshot(page, "cross_model.png")
    assert page.requests.foreign() == []


def test_closing_the_tab_frees_the_session_at_once(browser, app_demo):
    import time

    registry = app_demo.sx_registry
    context, page = open_page(browser, f"{app_demo.sx_url}/?gallery=none")
    run_prompt(page, "A prompt whose grid should not outlive its tab")
    held = [s for s in registry._by_connection.values() if s.grid is not None
            and s.grid.prompt == "A prompt whose grid should not outlive its tab"]
    assert len(held) == 1, ([(h, s.grid.prompt if s.grid else None, s.closed) for h, s in registry._by_connection.items()],
                            registry.budget.evicted)
    session = held[0]
    assert registry.budget.total_bytes() >= session.nbytes() > 0
    context.close()
    deadline = time.monotonic() + 30
    while session.grid is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert session.grid is None and session.results is None
    assert session not in registry._by_connection.values()
    assert session.session_id not in registry.budget._sessions
