"""Checking an edit's effect: answers to test prompts and simple facts, without and with it."""

from __future__ import annotations

from collections.abc import Sequence

from explorer.core.generation import greedy_text
from explorer.core.models import LoadedModel
from explorer.methods.control.edit import Edit, applied

DEFAULT_TEST_PROMPTS = [
    "What is the Eiffel Tower?",
    "Describe a cat in one sentence.",
    "What is the capital of France?",
]
RETENTION_FACTS = [
    ("The capital of France is", "Paris"),
    ("The Eiffel Tower is located in the city of", "Paris"),
    ("Water is made of hydrogen and", "oxygen"),
    ("The largest planet in our solar system is", "Jupiter"),
    ("The opposite of hot is", "cold"),
    ("One, two, three, four,", "five"),
]


def compare_answers(lm: LoadedModel, edit: Edit | None, prompts: Sequence[str] = DEFAULT_TEST_PROMPTS, *,
                    max_new_tokens: int = 24) -> list[dict]:
    """Greedy answers to test prompts without and with the edit, side by side."""
    rows = []
    for p in prompts:
        if not p or not p.strip():
            continue
        before = greedy_text(lm, p, max_new_tokens=max_new_tokens)
        with applied(lm, edit):
            after = greedy_text(lm, p, max_new_tokens=max_new_tokens)
        rows.append({"prompt": p, "before": before, "after": after, "changed": before != after})
    return rows


def retention(lm: LoadedModel, edit: Edit | None, facts=RETENTION_FACTS, max_new_tokens: int = 6) -> float:
    """Share of simple facts answered correctly (plain-text completion), with ``edit`` applied."""
    hits = 0
    with applied(lm, edit):
        for prompt, answer in facts:
            hits += answer.lower() in greedy_text(lm, prompt, max_new_tokens=max_new_tokens, chat=False).lower()
    return hits / len(facts)
