"""Plain greedy generation: the one place that calls ``model.generate`` for answers.

Always greedy (``do_sample=False`` and the sampling knobs cleared), whatever the model's
``generation_config`` asks for: a config that samples would otherwise change answers silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from explorer.core.grid import tokenize_prompt
from explorer.core.models import LoadedModel
from explorer.core.stop import checkpoint


def greedy_ids(lm: LoadedModel, ids: Sequence[int] | torch.Tensor, max_new_tokens: int) -> list[int]:
    """The greedy continuation of one token sequence (the new tokens only)."""
    checkpoint()
    t = ids if isinstance(ids, torch.Tensor) else torch.tensor([list(ids)])
    t = t.to(lm.device)
    if t.dim() == 1:
        t = t[None]
    with torch.inference_mode():
        out = lm.model.generate(input_ids=t, attention_mask=torch.ones_like(t), do_sample=False, num_beams=1,
                                max_new_tokens=max_new_tokens, min_new_tokens=None, temperature=None, top_p=None,
                                top_k=None, pad_token_id=lm.tokenizer.pad_token_id)
    return [int(i) for i in out[0, t.shape[1]:]]


def greedy_text(lm: LoadedModel, prompt: str, *, max_new_tokens: int = 24, chat: bool = True,
                max_prompt_tokens: int = 512) -> str:
    """The model's greedy answer to ``prompt`` (chat-wrapped when ``chat`` and the model has a template)."""
    ids = tokenize_prompt(lm, prompt, chat=chat, max_tokens=max_prompt_tokens)
    return lm.tokenizer.decode(greedy_ids(lm, ids, max_new_tokens), skip_special_tokens=True).strip()
