"""Teacher-forcing many continuations of one prompt in a single pass, shared prefixes computed once.

Relevancy needs p(y_j | prompt without the state, y_<j) for every generated sequence. Sequences of
one batch often share their first tokens ("the city of ...") and differ in length. Instead of a
padded batch (one row per sequence, padded to the longest), the distinct prefixes are laid out as
the nodes of a trie in one row: each node attends to the cached prompt and to its own ancestors
(a 4D attention mask), at the position its depth gives. Every prefix is computed once and nothing
is padded; ``python -m explorer bench`` times both (here: 39% less time than the padded batch,
max difference ~4e-6).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class PrefixTree:
    """The trie of the inputs ``seq[:-1]`` of some sequences; node ``paths[r][j]`` holds ``seq_r[j]``.

    ``tokens``, ``parents`` and ``depths`` are per node, in an order where parents come first.
    """

    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    paths: list[list[int]] = field(default_factory=list)

    @classmethod
    def build(cls, seqs: Sequence[Sequence[int]]) -> PrefixTree:
        tree = cls()
        index: dict[tuple[int, int], int] = {}
        for seq in seqs:
            path: list[int] = []
            parent = -1
            for depth, tok in enumerate(seq[:-1]):
                node = index.get((parent, int(tok)))
                if node is None:
                    node = index[(parent, int(tok))] = len(tree.tokens)
                    tree.tokens.append(int(tok))
                    tree.parents.append(parent)
                    tree.depths.append(depth)
                path.append(node)
                parent = node
            tree.paths.append(path)
        return tree

    def __len__(self) -> int:
        return len(self.tokens)

    def ancestry(self) -> torch.Tensor:
        """(N, N) bool: node i may see node j (j is i or one of its ancestors)."""
        n = len(self.tokens)
        sees = torch.zeros(n, n, dtype=torch.bool)
        for i, parent in enumerate(self.parents):
            if parent >= 0:
                sees[i] = sees[parent]
            sees[i, i] = True
        return sees

    def attention_mask(self, prompt_len: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
        """(1, 1, N, prompt_len + N) additive mask: 0 where a node may attend, the dtype's minimum elsewhere."""
        n = len(self.tokens)
        allowed = torch.cat([torch.ones(n, prompt_len, dtype=torch.bool), self.ancestry()], dim=1)
        mask = torch.zeros(n, prompt_len + n, dtype=dtype)
        mask.masked_fill_(~allowed, torch.finfo(dtype).min)
        return mask[None, None].to(device)

    def position_ids(self, prompt_len: int, device: torch.device | str) -> torch.Tensor:
        return torch.tensor([[prompt_len + d for d in self.depths]], device=device)


def pack(seqs: Sequence[Sequence[int]], max_nodes: int) -> list[list[int]]:
    """Indices of ``seqs`` in groups whose tries have at most ``max_nodes`` nodes (a longer single
    sequence gets a group of its own), keeping the attention of one pass small."""
    groups: list[list[int]] = []
    current: list[int] = []
    seen: set[tuple[int, ...]] = set()
    for i, seq in enumerate(seqs):
        prefixes = {tuple(seq[:j + 1]) for j in range(len(seq) - 1)}
        new = prefixes - seen
        if current and len(seen) + len(new) > max_nodes:
            groups.append(current)
            current, seen, new = [], set(), prefixes
        current.append(i)
        seen |= new
    if current:
        groups.append(current)
    return groups
