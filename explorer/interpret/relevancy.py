"""Relevancy: p(y_j | placeholders left as they are), teacher-forced as one prefix tree.

Relevancy of generated token y_j is |p(y_j | state injected) - p(y_j | placeholders unpatched)|;
the first term comes from the decoding loop, the second from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from explorer.core.models import LoadedModel
from explorer.interpret.prefix_tree import PrefixTree, pack
from explorer.interpret.prompt_state import PromptState, repeat_cache


@dataclass
class RelevancyScorer:
    """Scores generated sequences without the state; the tree pass is checked once per model."""

    lm: LoadedModel
    tree_ok: bool | None = field(default=None, repr=False)  # None until checked on the first batch

    def p_without(self, state: PromptState, generated: Sequence[Sequence[int]],
                  max_nodes: int = 512) -> list[list[float]]:
        """p(y_j | prefix, placeholders unpatched) for each generated sequence, teacher-forced.

        Identical sequences and shared prefixes are computed once (a prefix tree in one pass per
        ``max_nodes`` nodes, see ``explorer.interpret.prefix_tree``); the unpatched prompt's cache is shared.
        The first time, the tree pass is checked against a plain padded batch on three short
        sequences: a model whose attention ignores custom masks keeps the padded batch.
        """
        first = state.unpatched_last_logprobs
        unique: dict[tuple[int, ...], int] = {}
        for seq in generated:
            unique.setdefault(tuple(int(t) for t in seq), len(unique))
        seqs = list(unique)
        values: list[list[float]] = [[float(first[s[0]].exp())] if s else [] for s in seqs]
        long_rows = [i for i, s in enumerate(seqs) if len(s) > 1]
        with torch.inference_mode():
            for group in pack([seqs[i] for i in long_rows], max_nodes):
                rows = [long_rows[g] for g in group]
                group_seqs = [seqs[r] for r in rows]
                if self.tree_ok is None:
                    self.tree_ok = self.tree_agrees(state)
                got = self.p_tree(state, group_seqs) if self.tree_ok else self.p_padded(state, group_seqs)
                for r, probs in zip(rows, got):
                    values[r].extend(probs)
        return [values[unique[tuple(int(t) for t in seq)]] for seq in generated]

    def tree_agrees(self, state: PromptState) -> bool:
        """Once per model: do a few short branching sequences get the same numbers from the tree pass
        as from the padded batch? (A model whose attention ignores custom masks would not.)"""
        ids = ([int(t) for t in state.prompt.ids] * 6)[-6:]  # any tokens do; short prompts repeat
        seqs = [tuple(ids[:4]), (*ids[:2], ids[4], ids[5]), tuple(ids[3:6])]
        tree, padded = self.p_tree(state, seqs), self.p_padded(state, seqs)
        # Half precision rounds the two passes differently (up to ~0.02 in bf16 on the embedded model); a
        # mask that is ignored moves probabilities far more than that.
        tol = 1e-3 if self.lm.dtype == torch.float32 else 5e-2
        return all(len(a) == len(b) and all(abs(x - y) < tol for x, y in zip(a, b)) for a, b in zip(tree, padded))

    def p_tree(self, state: PromptState, seqs: list[tuple[int, ...]]) -> list[list[float]]:
        """p(seq[j+1] | seq[:j+1]) for j >= 0, all sequences as one prefix tree in one forward pass."""
        lm = self.lm
        tree = PrefixTree.build(seqs)
        prompt_len = len(state.prompt.ids)
        out = lm.model(input_ids=torch.tensor([tree.tokens], device=lm.device),
                       attention_mask=tree.attention_mask(prompt_len, lm.dtype, lm.device),
                       position_ids=tree.position_ids(prompt_len, lm.device),
                       past_key_values=repeat_cache(state.unpatched_cache, 1), use_cache=True)
        logp = torch.log_softmax(out.logits[0].float(), dim=-1)
        result = []
        for seq, path in zip(seqs, tree.paths):
            targets = torch.tensor(seq[1:], device=lm.device)
            result.append(logp[torch.tensor(path, device=lm.device), targets].exp().cpu().tolist())
        return result

    def p_padded(self, state: PromptState, seqs: list[tuple[int, ...]]) -> list[list[float]]:
        """The same as :meth:`p_tree` as a right-padded batch (one row per sequence)."""
        lm = self.lm
        pad = next(iter(sorted(lm.eos_token_ids)), 0)
        width = max(len(s) for s in seqs)
        inp = torch.full((len(seqs), width - 1), pad, dtype=torch.long)
        tgt = torch.full((len(seqs), width - 1), pad, dtype=torch.long)
        for j, seq in enumerate(seqs):
            t = torch.tensor(seq)
            inp[j, : len(t) - 1] = t[:-1]
            tgt[j, : len(t) - 1] = t[1:]
        out = lm.model(input_ids=inp.to(lm.device), past_key_values=repeat_cache(state.unpatched_cache, len(seqs)),
                       use_cache=True)
        p = torch.log_softmax(out.logits.float(), dim=-1).gather(2, tgt.to(lm.device)[..., None])[..., 0].exp().cpu()
        return [p[j, : len(seq) - 1].tolist() for j, seq in enumerate(seqs)]
