"""The Control tab in a real browser: a short supervised edit shows before/after, then revert."""

from __future__ import annotations

import pytest

from tests.ui.conftest import run_prompt
from tests.ui.test_explore_browser import screenshot

pytestmark = pytest.mark.browser


def test_short_supervised_edit_shows_before_and_after(page):
    page.get_by_role("tab", name="Control").click()
    page.fill("#sx-t-phrase textarea", "an elephant")
    page.click("#sx-s-run")
    page.wait_for_function("() => document.querySelector('#sx-edit-status').innerText.includes('applied to your')",
                           timeout=120_000)
    before = page.input_value("#sx-s-before textarea")
    after = page.input_value("#sx-s-after textarea")
    assert before.strip() and after.strip() and before != after
    assert "elephant" in after.lower()
    page.wait_for_function("() => { const g = document.querySelector('#sx-s-answers [role=grid]');"
                           " return g && Number(g.getAttribute('aria-rowcount')) - 1 >= 3; }")  # default test prompts
    status = page.inner_text("#sx-edit-status")
    assert "edit-" in status and "lower" in status
    screenshot(page, "control_supervised.png")
    # The edit is this session's: the Explore grid now reads the edited state; Revert removes it.
    page.click("#sx-revert")
    page.wait_for_function("() => document.querySelector('#sx-edit-status').innerText.includes('Reverted')")
    page.get_by_role("tab", name="Explore").click()
    run_prompt(page, "The Eiffel Tower is in the city of")
    assert "control edit" not in page.inner_text("#sx-status")
    assert page.requests.foreign() == []
