"""The greedy SelfIE decoding loop: prefill with the states injected, then decode greedily.

A short loop over the model's own forward and cache: rows that reach EOS leave the batch, and
p(y_j | with state) is read from the loop's own logits (no second pass).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from explorer.core.hooks import inject
from explorer.core.models import LoadedModel
from explorer.core.stop import checkpoint
from explorer.interpret.prompt_state import PromptState, repeat_cache
from explorer.interpret.settings import InterpretSettings


@dataclass
class GeneratedBatch:
    """Greedy generations for B states: ``ids[b]`` and ``p_with[b]`` stop before EOS."""

    ids: list[list[int]]
    p_with: list[list[float]]
    steps: int = 0
    prompt_len: int = 0
    dropped: frozenset[int] = frozenset()  # rows that left early because ``keep`` said so (not EOS)


def decode_greedy(lm: LoadedModel, state: PromptState, vectors: torch.Tensor, settings: InterpretSettings,
                  on_step: Callable[[int, list[list[int]]], None] | None = None,
                  keep: Callable[[list[int]], list[bool]] | None = None) -> GeneratedBatch:
    """Greedy SelfIE generations for ``vectors`` (B, d); always greedy, whatever generation_config says.

    ``keep(rows)`` is asked once per step which of the still-running rows (original indices) are
    still wanted: a row that is not (its request was stopped or abandoned) leaves the batch exactly
    as a row at EOS does, and the others continue unchanged. Dropped rows are listed in the result.
    """
    prompt = state.prompt
    p0 = prompt.first_placeholder
    B = int(vectors.shape[0])
    eos = torch.tensor(sorted(lm.eos_token_ids) or [-1], device=lm.device)
    rel_positions = [p - p0 for p in prompt.placeholder_positions]
    suffix = torch.tensor([prompt.ids[p0:]], device=lm.device).expand(B, -1)
    vecs = vectors.to(lm.device, lm.dtype)
    ids: list[list[int]] = [[] for _ in range(B)]
    p_with: list[list[float]] = [[] for _ in range(B)]
    with torch.inference_mode():
        cache = repeat_cache(state.prefix_cache, B)
        with inject(lm.arch.blocks[settings.k], rel_positions, vecs, settings.strength):
            out = lm.model(input_ids=suffix, past_key_values=cache, use_cache=True, logits_to_keep=1)
        cache = out.past_key_values
        logits = out.logits[:, -1]
        active = torch.arange(B, device=lm.device)  # original row of each batch row
        dropped: set[int] = set()
        steps = 0
        for step in range(settings.max_new_tokens):
            checkpoint()  # a job whose client left stops here, between tokens (outside shared batches)
            logp = torch.log_softmax(logits.float(), dim=-1)
            tok = logp.argmax(-1)
            p = logp.gather(1, tok[:, None])[:, 0].exp()
            ended = torch.isin(tok, eos)
            rows = active.tolist()
            if keep is not None:
                wanted = keep(rows)
                if not all(wanted):
                    gone = torch.tensor([not w for w in wanted], device=lm.device)
                    dropped.update(r for r, w in zip(rows, wanted) if not w)
                    ended = ended | gone
            tok_l, p_l, ended_l = tok.tolist(), p.tolist(), ended.tolist()
            for j, row in enumerate(rows):
                if not ended_l[j] and row not in dropped:
                    ids[row].append(tok_l[j])
                    p_with[row].append(p_l[j])
            steps = step + 1
            if on_step is not None:
                on_step(steps, ids)
            if step == settings.max_new_tokens - 1:
                break
            going = ~ended
            if not bool(going.any()):
                break
            if not bool(going.all()):
                keep_idx = going.nonzero()[:, 0]
                cache.batch_select_indices(keep_idx)
                active, tok = active[keep_idx], tok[keep_idx]
            out = lm.model(input_ids=tok[:, None], past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[:, -1]
    return GeneratedBatch(ids=ids, p_with=p_with, steps=steps, prompt_len=len(prompt.ids), dropped=frozenset(dropped))
