"""The per-template precomputation every batch shares: the prompt's ids and two KV caches.

The prefix before the first placeholder is identical in every row, so its KV is computed once per
(template, K, model variant) and copied per batch; the whole prompt with the placeholders left as
they are is the relevancy baseline, also computed once.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field

import torch

from explorer.core.hooks import MODEL_VARIANT
from explorer.core.models import LoadedModel
from explorer.core.prompts import InterpretationPrompt, build_interpretation_prompt
from explorer.interpret.settings import InterpretSettings


@dataclass
class PromptState:
    """Per (template, K, weights) precomputation shared by every batch."""

    prompt: InterpretationPrompt
    prefix_cache: object | None  # KV of ids[:first placeholder], batch 1
    unpatched_cache: object  # KV of the whole prompt with placeholders left as they are, batch 1
    unpatched_last_logprobs: torch.Tensor  # (V,) next-token log-probs after the unpatched prompt


@dataclass
class PromptStates:
    """A small thread-safe cache of :class:`PromptState` per (template, K, model variant)."""

    lm: LoadedModel
    _states: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self, settings: InterpretSettings) -> PromptState:
        if settings.prompt is not None:
            key: tuple = ("ids", settings.prompt.ids, settings.prompt.placeholder_positions, MODEL_VARIANT.get())
        else:
            key = (settings.template.user, settings.template.lead_in, settings.template.system,
                   settings.template.chat, settings.n_placeholders, MODEL_VARIANT.get())
        with self._lock:
            state = self._states.get(key)
        if state is not None:
            return state
        prompt = settings.prompt or build_interpretation_prompt(self.lm.tokenizer, settings.template,
                                                                settings.n_placeholders)
        ids = torch.tensor([prompt.ids], device=self.lm.device)
        p0 = prompt.first_placeholder
        with torch.inference_mode():
            prefix_cache = None
            if p0 > 0:
                prefix_cache = self.lm.model(input_ids=ids[:, :p0], use_cache=True, logits_to_keep=1).past_key_values
            cache = copy.deepcopy(prefix_cache) if prefix_cache is not None else None
            out = self.lm.model(input_ids=ids[:, p0:], past_key_values=cache, use_cache=True, logits_to_keep=1)
            last = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
        state = PromptState(prompt, prefix_cache, out.past_key_values, last)
        with self._lock:
            if len(self._states) > 32:
                self._states.pop(next(iter(self._states)))
            self._states[key] = state
        return state


def repeat_cache(cache, n: int):
    """A private copy of a batch-1 cache repeated ``n`` times (the original is never mutated)."""
    if cache is None:
        return None
    out = copy.deepcopy(cache)
    if n != 1:
        out.batch_repeat_interleave(n)
    return out
