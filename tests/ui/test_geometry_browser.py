"""The geometry colour modes in a real browser: switch to each, hover a cell, read its value."""

from __future__ import annotations

import math
import re

import pytest

from tests.ui.conftest import cell_point, grid_ready, revision, run_prompt

pytestmark = pytest.mark.browser
PROMPT = "The Eiffel Tower is in the city of"
# (menu label, trace name, what the hover says before the value)
MODES = [("MLP on-fraction", "MLP on-fraction", "neurons on"),
         ("log distance to a region boundary", "log boundary distance", "log boundary distance"),
         ("attention intrinsic dimension", "attention intrinsic dimension", "attention intrinsic dimension")]


def hover_text(page, layer: int, token: int) -> str:
    """Move the mouse over a cell and return the hover label plotly.js shows."""
    x, y = cell_point(page, layer, token)
    page.mouse.move(0, 0)  # off the figure: any earlier hover label goes away first
    page.wait_for_selector("#sx-grid .hoverlayer .hovertext", state="detached", timeout=15_000)
    page.mouse.move(x, y)
    page.wait_for_selector("#sx-grid .hoverlayer .hovertext", timeout=15_000)
    return page.evaluate("() => Array.from(document.querySelectorAll('#sx-grid .hoverlayer .hovertext tspan.line'))"
                         ".map(t => t.textContent).join('\\n')")


def test_each_geometry_colour_mode_shows_its_value_on_hover(page, app_demo):
    from explorer.methods.geometry.features import geometry

    run_prompt(page, PROMPT)
    lm = app_demo.sx_registry.get("default").lm
    ref = geometry(lm, lm.tokenizer.encode(PROMPT))
    for label, name, words in MODES:
        rev = revision(page)
        page.click("#sx-colour input")
        page.locator("ul[role=listbox] li", has_text=label).first.click()
        grid_ready(page, rev)
        data = page.evaluate("() => document.querySelector('#sx-grid .sx-plot').data[0]")
        assert data["name"] == name
        assert all(v is None for v in data["z"][0])  # the embeddings row has no block
        text = hover_text(page, 20, 7)
        assert "layer 20" in text and "block 19" in text and words in text
        shown = float(re.match(r"\s*(-?[0-9.]+)", text.split(words)[1]).group(1))  # type: ignore[union-attr]
        expected = {"neurons on": ref.on_fraction, "log boundary distance": ref.log_distance,
                    "attention intrinsic dimension": ref.intrinsic_dim}[words][20, 7]
        assert math.isclose(shown, expected, abs_tol=1e-3 if words != "attention intrinsic dimension" else 0.5)
    assert page.requests.foreign() == []
