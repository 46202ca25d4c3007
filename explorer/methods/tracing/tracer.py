"""Trace a prompt: corrupt the subject, restore every cell, and keep p(answer) as a :class:`CausalTrace`."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from explorer.core.grid import tokenize_prompt
from explorer.core.hooks import MODEL_VARIANT
from explorer.core.models import LoadedModel
from explorer.core.version import __version__
from explorer.methods.tracing.engine import Cell, TraceRun, prepare
from explorer.methods.tracing.inputs import (
    MAX_TRACE_TOKENS,
    TraceSettings,
    answer_token_ids,
    check_length,
    subject_positions,
    token_spans,
)
from explorer.methods.tracing.result import CausalTrace


def trace(lm: LoadedModel, prompt: str, answer: str, subject: str | None = None, *, chat: bool = False,
          settings: TraceSettings | None = None, progress: Callable[[int, int], None] | None = None,
          **setting_kwargs) -> CausalTrace:
    """Causal tracing of ``answer`` after ``prompt`` (optionally wrapped as a chat turn); ``subject``: the
    words to corrupt (None: the first capitalised name in the prompt). ``lm`` may be an ``Explorer``;
    ``setting_kwargs`` (samples, noise, seed, kind, window) build the settings when none are given.

        >>> tr = trace(ex, "The Eiffel Tower is in the city of", " Paris", samples=10)
        >>> tr.effect.shape, tr.p_clean, tr.p_corrupted
    """
    lm = getattr(lm, "lm", lm)  # an Explorer carries its model
    settings = settings or TraceSettings(**setting_kwargs)
    ids = tokenize_prompt(lm, prompt, chat=chat, max_tokens=MAX_TRACE_TOKENS)
    result = trace_ids(lm, ids, answer, subject, prompt=prompt, settings=settings, progress=progress)
    assert result is not None  # only a should_stop test stops a trace
    return result


def setup(lm: LoadedModel, ids: list[int], answer: str, subject: str | None = None, *, prompt: str | None = None,
          settings: TraceSettings | None = None) -> tuple[TraceRun, str, list[int], str]:
    """The checked inputs and both passes: ``(run, answer as measured, its ids, subject)``."""
    settings = settings or TraceSettings()
    text, _spans = token_spans(lm.tokenizer, ids)
    answer_text, answer_ids = answer_token_ids(lm.tokenizer, text, answer)
    subject_text, positions = subject_positions(lm.tokenizer, ids, subject, prompt)
    check_length(len(ids), min(positions))
    return prepare(lm, ids, answer_ids[0], positions, settings), answer_text, answer_ids, subject_text


def trace_ids(lm: LoadedModel, ids: list[int], answer: str, subject: str | None = None, *, prompt: str | None = None,
              settings: TraceSettings | None = None, progress: Callable[[int, int], None] | None = None,
              should_stop: Callable[[], bool] | None = None) -> CausalTrace | None:
    """``trace`` for token ids that are already known (a grid's); None if ``should_stop`` stopped it.

    Every cell from the first subject token on is restored (row 0 included; an MLP trace from row 1),
    batched by row; ``progress(rows done, rows)`` follows.
    """
    run, answer_text, answer_ids, subject_text = setup(lm, ids, answer, subject, prompt=prompt, settings=settings)
    n_rows, n_tokens = lm.n_layers + 1, len(ids)
    first = min(run.positions)
    rows = range(1 if run.settings.kind == "mlp" else 0, n_rows)
    cells: list[Cell] = [(row, (t,)) for row in rows for t in range(first, n_tokens)]
    restored = run.restore(cells, on_step=progress, should_stop=should_stop)
    if restored is None:
        return None
    effect = np.zeros((n_rows, n_tokens))
    if run.settings.kind == "mlp":
        effect[0] = np.nan
    for (row, (t,)), p in zip(cells, restored):
        effect[row, t] = p - run.p_corrupted
    texts = [lm.tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]
    provenance = {**lm.provenance(), "variant": MODEL_VARIANT.get(), "answer_given": answer,
                  "subject_given": subject or None, "method": "causal tracing (Meng et al. 2022)",
                  "explorer_version": __version__}
    return CausalTrace(
        prompt=prompt if prompt is not None else lm.tokenizer.decode(ids), token_ids=tuple(ids), tokens=tuple(texts),
        answer=answer_text, answer_ids=tuple(answer_ids), answer_token=lm.tokenizer.decode([answer_ids[0]]),
        subject=subject_text, subject_positions=tuple(run.positions), effect=effect, p_clean=run.p_clean,
        p_corrupted=run.p_corrupted, settings=run.settings, noise_std=run.noise_std, provenance=provenance)
