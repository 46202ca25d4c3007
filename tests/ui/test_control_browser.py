"""The Control tab in a real browser: a short supervised edit shows before/after, then revert."""

from __future__ import annotations

import re

import pytest

from tests.ui.conftest import run_prompt
from tests.ui.test_explore_browser import screenshot

pytestmark = pytest.mark.browser


def test_short_supervised_edit_shows_before_and_after(page):
    run_prompt(page, "The Eiffel Tower is in the city of")
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
    edit_id = re.search(r"edit-[0-9a-f]+", status).group(0)  # type: ignore[union-attr]
    # Control and Explore say the same thing: the grid is captured again with the edit, nothing to re-run.
    assert "Re-run" not in status and "captured again" in status
    screenshot(page, "control_supervised.png")
    page.get_by_role("tab", name="Explore").click()
    page.wait_for_function("id => document.querySelector('#sx-status').innerText.includes('captured again with control '"
                           " + 'edit ' + id)", arg=edit_id, timeout=30_000)
    assert page.is_visible(f"#sx-banner-body[data-edit='{edit_id}']")
    page.get_by_role("tab", name="Control").click()
    # The edit is this session's: the Explore grid now reads the edited state; Revert removes it.
    page.click("#sx-revert")
    page.wait_for_function("() => document.querySelector('#sx-edit-status').innerText.includes('Reverted')")
    page.get_by_role("tab", name="Explore").click()
    run_prompt(page, "The Eiffel Tower is in the city of")
    assert "control edit" not in page.inner_text("#sx-status")
    assert page.requests.foreign() == []
