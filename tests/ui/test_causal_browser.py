"""The "causal effect on the answer" colour mode in a real browser: pick it, type the answer, Trace."""

from __future__ import annotations

import re

import pytest
import torch

from tests.ui.conftest import click_cell, grid_ready, revision, run_prompt

pytestmark = pytest.mark.browser
PROMPT = "The Eiffel Tower is in the city of"


def test_causal_mode_traces_the_grid_and_shows_the_effect_beside_the_reading(page, app_demo):
    run_prompt(page, PROMPT)
    assert not page.locator("#sx-causal-answer").is_visible()  # the fields belong to the causal mode
    rev = revision(page)
    page.click("#sx-colour input")
    page.locator("ul[role=listbox] li", has_text="causal effect on the answer").first.click()
    page.wait_for_selector("#sx-causal-answer textarea", state="visible", timeout=30_000)
    grid_ready(page, rev)
    assert "Type the answer" in page.inner_text("#sx-job-progress")
    rev = revision(page)
    page.fill("#sx-causal-answer textarea", "Paris")
    page.click("#sx-causal-run")
    page.wait_for_selector("#sx-job-progress .sx-causal-note[data-p-clean]", timeout=300_000)
    grid_ready(page, rev)
    data = page.evaluate("() => document.querySelector('#sx-grid .sx-plot').data"
                         ".find(d => d.name === 'causal effect on the answer')")
    assert data is not None
    z = data["z"]
    assert len(z) == 31 and len(z[0]) == 9 and all(v == 0 for v in (row[0] for row in z))  # "The" precedes the subject
    assert max(v for row in z for v in row) > 0.2  # restoring the subject's states brings " Paris" back
    # The legend carries p_clean, the model's own probability of " Paris" after the prompt.
    title = data["colorbar"]["title"]["text"]
    lm = app_demo.sx_registry.get("default").lm
    with torch.inference_mode():
        logits = lm.model(input_ids=torch.tensor([lm.tokenizer.encode(PROMPT)])).logits[0, -1].double()
    p_clean = float(torch.softmax(logits, -1)[lm.tokenizer.encode(" Paris", add_special_tokens=False)[0]])
    shown = float(re.search(r"p_clean ([0-9.]+)", title).group(1))  # type: ignore[union-attr]
    assert abs(shown - p_clean) < 1e-3 and "p_corrupted" in title
    # A click shows the cell's reading with its causal effect beside it.
    click_cell(page, 10, 2)
    page.wait_for_function("() => { const c = document.querySelector('#sx-details .sx-cell');"
                           " const i = document.querySelector('#sx-details .sx-interp');"
                           " return c && c.dataset.layer === '10' && c.dataset.token === '2' && i"
                           " && i.dataset.complete === '1' && document.querySelector('#sx-details .sx-causal'); }",
                           timeout=120_000)
    effect = float(page.get_attribute("#sx-details .sx-causal", "data-effect"))
    assert abs(effect - z[10][2]) < 1e-3 and "causal effect" in page.inner_text("#sx-details .sx-causal")
    assert page.inner_text("#sx-details .sx-interp").strip()
    assert page.requests.foreign() == []
