"""Interpretation prompts: placeholder positions come from the ids, for every preset and tokenizer."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.core.errors import InputError
from explorer.core.prompts import PLACEHOLDER, PRESETS, Template, build_interpretation_prompt, get_template


@pytest.mark.parametrize("tok_name", ["chatml", "llama2", "gemma", "plain"])
@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("k", [1, 5, 9])
def test_placeholder_positions_hold_placeholder_ids(tokenizers, tok_name, preset, k):
    tok = tokenizers[tok_name]
    tpl = get_template(preset, has_chat_template=tok.chat_template is not None)
    p = build_interpretation_prompt(tok, tpl, k)
    assert len(p.placeholder_positions) == k
    assert list(p.placeholder_positions) == list(range(p.first_placeholder, p.first_placeholder + k))
    assert all(p.ids[i] == p.placeholder_id for i in p.placeholder_positions)
    # Nothing else in the prompt is the placeholder id right next to the block.
    assert p.ids[p.first_placeholder - 1] != p.placeholder_id if p.first_placeholder else True
    text = tok.decode(list(p.ids))
    assert tpl.lead_in in text
    if tpl.chat and tok_name == "chatml":
        assert text.startswith("<|im_start|>system") and "<|im_start|>assistant" in text
    if tok_name == "llama2" and tpl.chat:
        assert "[INST]" in text and "[/INST]" in text
    if tok_name == "gemma" and tpl.chat:
        assert "<start_of_turn>model" in text  # system merged into the user turn


def test_template_errors():
    with pytest.raises(InputError, match="no placeholder"):
        Template("t", "nothing here", "lead").validate()
    with pytest.raises(InputError, match="2 placeholders"):
        Template("t", f"{PLACEHOLDER} and {PLACEHOLDER}", "lead").validate()
    with pytest.raises(InputError, match="Only the user"):
        Template("t", PLACEHOLDER, f"lead {PLACEHOLDER}").validate()
    with pytest.raises(InputError, match="empty"):
        get_template("   ")
    custom = get_template("Tell me about {X} please|It is", has_chat_template=True)
    assert custom.user == "Tell me about {X} please" and custom.lead_in == "It is"


@pytest.mark.parametrize("k", [0, -1, 65, 2.5, "5"])
def test_placeholder_count_out_of_range(tokenizers, k):
    with pytest.raises(InputError):
        build_interpretation_prompt(tokenizers["chatml"], PRESETS["summarize"], k)


@settings(max_examples=60, deadline=None)
@given(before=st.text(max_size=40), after=st.text(max_size=40), k=st.integers(1, 12))
def test_any_custom_text_keeps_positions_exact(tokenizers, before, after, k):
    """Property: whatever surrounds the marker, the ids at the positions are the placeholder."""
    user = before.replace(PLACEHOLDER, "") + PLACEHOLDER + after.replace(PLACEHOLDER, "")
    tpl = Template("custom", user, "Answer:")
    p = build_interpretation_prompt(tokenizers["chatml"], tpl, k)
    assert [p.ids[i] for i in p.placeholder_positions] == [p.placeholder_id] * k


@settings(max_examples=80, deadline=None)
@given(st.text(max_size=60))
def test_template_parser_accepts_or_rejects_clearly(text):
    """Property: any text either parses to a template with one marker or raises InputError."""
    try:
        t = get_template(text, has_chat_template=True)
    except InputError as e:
        assert str(e)
    else:
        assert t.user.count(PLACEHOLDER) == 1
