"""One forward pass over a prompt gives every hidden state: the layer x token grid.

Rows are residual-stream states: row 0 is the embedding output and row i (1..N) the output of
block i-1, i.e. the input of block i. Hugging Face returns its last hidden state *after* the final
norm; here row N is read un-normed from the last block with a hook, so every row is the same kind
of quantity and the logit lens treats them all alike (final norm, then unembedding).

The logit lens of every cell costs (N+1) x T unembeddings of a 49k vocabulary, several times the
forward pass itself on long prompts, so it is computed lazily for the cells asked for and cached.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import torch

from explorer.core.errors import InputError
from explorer.core.files import shorten
from explorer.core.hooks import record
from explorer.core.models import LoadedModel
from explorer.core.prompts import source_prompt_ids

DEFAULT_MAX_PROMPT_TOKENS = 1024


@dataclass
class LensTopK:
    """Logit-lens top-k for a block of cells: ``probs``/``ids`` are (R, C, k), ``rows``/``cols`` index them."""

    rows: list[int]
    cols: list[int]
    probs: np.ndarray
    ids: np.ndarray
    final_rank: np.ndarray  # (R, C): rank of the model's own final prediction at that column


@dataclass
class Grid:
    """All hidden states of one prompt.

    ``hidden``: float32 CPU tensor (N+1, T, d); ``token_ids``/``tokens``/``special``: length T;
    ``next_token_ids``: (T,) the model's own greedy next token after each position (final row's
    logit lens); ``provenance``: model id, dtype, version, and how the prompt was wrapped.
    """

    prompt: str
    token_ids: list[int]
    tokens: list[str]
    special: list[bool]
    hidden: torch.Tensor
    provenance: dict
    chat: bool = False
    _lens_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, int]] = field(default_factory=dict, repr=False)
    _next_ids: np.ndarray | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def n_rows(self) -> int:
        return int(self.hidden.shape[0])

    @property
    def n_tokens(self) -> int:
        return int(self.hidden.shape[1])

    @property
    def n_layers(self) -> int:
        return self.n_rows - 1

    def check_cell(self, layer: int, token: int) -> None:
        if not isinstance(layer, (int, np.integer)) or not isinstance(token, (int, np.integer)):
            raise InputError(f"A cell is a pair of whole numbers (layer, token); got "
                             f"({shorten(repr(layer))}, {shorten(repr(token))}).")
        if not 0 <= layer < self.n_rows:
            raise InputError(f"Layer {shorten(layer)} is out of range: this model's grid has layers 0 to "
                             f"{self.n_rows - 1}.")
        if not 0 <= token < self.n_tokens:
            raise InputError(f"Token {shorten(token)} is out of range: this prompt has tokens 0 to "
                             f"{self.n_tokens - 1}.")

    def state(self, layer: int, token: int) -> torch.Tensor:
        self.check_cell(layer, token)
        return self.hidden[layer, token]

    def fingerprint(self) -> str:
        """Identifies the grid's content for caches: model, weights-edit, and token ids."""
        import hashlib

        h = hashlib.sha1()
        h.update(repr((self.provenance.get("model_id"), self.provenance.get("edit_id"), self.token_ids)).encode())
        return h.hexdigest()[:16]

    # ----------------------------------------------------------------------------- logit lens
    def lens(self, lm: LoadedModel, rows: list[int] | None = None, cols: list[int] | None = None,
             k: int = 5) -> LensTopK:
        """Logit-lens top-k for the given cells (default all), computed in chunks and cached."""
        rows = list(range(self.n_rows)) if rows is None else [int(r) for r in rows]
        cols = list(range(self.n_tokens)) if cols is None else [int(c) for c in cols]
        for r in rows:
            self.check_cell(r, 0)
        for c in cols:
            self.check_cell(0, c)
        next_ids = self.next_token_ids(lm)
        missing = [(r, c) for r in rows for c in cols if (r, c) not in self._lens_cache or
                   self._lens_cache[(r, c)][0].shape[0] < k]
        if missing:
            self._compute_lens(lm, missing, max(k, 5), next_ids)
        probs = np.zeros((len(rows), len(cols), k), dtype=np.float32)
        ids = np.zeros((len(rows), len(cols), k), dtype=np.int64)
        ranks = np.zeros((len(rows), len(cols)), dtype=np.int64)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                p, t, rank = self._lens_cache[(r, c)]
                probs[i, j], ids[i, j], ranks[i, j] = p[:k], t[:k], rank
        return LensTopK(rows, cols, probs, ids, ranks)

    def next_token_ids(self, lm: LoadedModel) -> np.ndarray:
        """(T,) the model's own greedy prediction after each position (logit lens of row N)."""
        with self._lock:
            if self._next_ids is None:
                with torch.inference_mode():
                    logits = lm.arch.logit_lens(self.hidden[-1].to(lm.device, lm.dtype))
                self._next_ids = logits.argmax(-1).cpu().numpy()
            return self._next_ids

    def _compute_lens(self, lm: LoadedModel, cells: list[tuple[int, int]], k: int, next_ids: np.ndarray,
                      chunk: int = 256) -> None:
        with torch.inference_mode():
            for start in range(0, len(cells), chunk):
                part = cells[start:start + chunk]
                r = torch.tensor([c[0] for c in part])
                c = torch.tensor([c[1] for c in part])
                states = self.hidden[r, c].to(lm.device, lm.dtype)
                logp = torch.log_softmax(lm.arch.logit_lens(states).float(), dim=-1)
                top = logp.topk(k, dim=-1)
                target = torch.as_tensor(next_ids[c.numpy()], device=logp.device)
                target_lp = logp.gather(1, target[:, None])
                rank = (logp > target_lp).sum(-1)
                p = top.values.exp().cpu().numpy()
                t = top.indices.cpu().numpy()
                rk = rank.cpu().numpy()
                with self._lock:
                    for i, cell in enumerate(part):
                        self._lens_cache[cell] = (p[i], t[i], int(rk[i]))

    def nbytes(self) -> int:
        return int(self.hidden.numel() * self.hidden.element_size())


def tokenize_prompt(lm: LoadedModel, prompt: str, *, chat: bool = False,
                    max_tokens: int = DEFAULT_MAX_PROMPT_TOKENS) -> list[int]:
    """Validate and tokenise a user prompt; errors say what is wrong and the limit."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("The prompt is empty: type some text to explore.")
    ids = source_prompt_ids(lm.tokenizer, prompt, chat=chat)
    if not ids:
        raise InputError("The prompt produced no tokens.")
    if len(ids) > max_tokens:
        raise InputError(f"The prompt is {len(ids)} tokens long; the limit is {max_tokens}. Shorten it.")
    return ids


def decode_tokens(tokenizer, ids: list[int]) -> tuple[list[str], list[bool]]:
    """Each token's text as the model sees it, and whether it is a special token."""
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    texts = [tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]
    return texts, [i in special_ids for i in ids]


def capture(lm: LoadedModel, prompt: str, *, chat: bool = False,
            max_tokens: int = DEFAULT_MAX_PROMPT_TOKENS, edit_id: str | None = None) -> Grid:
    """Run the prompt once and keep every residual-stream state (rows 0..N)."""
    ids = tokenize_prompt(lm, prompt, chat=chat, max_tokens=max_tokens)
    return capture_ids(lm, ids, prompt=prompt, chat=chat, edit_id=edit_id)


def capture_ids(lm: LoadedModel, ids: list[int], *, prompt: str | None = None, chat: bool = False,
                edit_id: str | None = None) -> Grid:
    """``capture`` for token ids that are already known (benchmarks, evaluations)."""
    if prompt is None:
        prompt = lm.tokenizer.decode(ids)
    input_ids = torch.tensor([ids], device=lm.device)
    arch = lm.arch
    with torch.inference_mode(), record([arch.blocks[0]], inputs=True) as ins, record(arch.blocks) as outs:
        # Only the last position's logits: the lm_head over all T positions is not needed here.
        lm.model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
    # Each state is on its own block's device when the model is sharded: gather them on the CPU.
    states = [ins[0][-1][0]] + [o[-1][0] for o in outs]
    hidden = torch.stack([s.to("cpu", torch.float32) for s in states])
    texts, special = decode_tokens(lm.tokenizer, ids)
    prov = lm.provenance() | {"chat_wrapped": chat, "edit_id": edit_id}
    return Grid(prompt=prompt, token_ids=ids, tokens=texts, special=special, hidden=hidden, provenance=prov, chat=chat)


def parse_cells(spec: str | list | tuple, grid: Grid) -> list[tuple[int, int]]:
    """Cells from ``"all"``, ``"row:L"``, ``"col:T"``, ``"L:T,L:T"`` or a list of pairs; validated."""
    if isinstance(spec, str):
        text = spec.strip().lower()
        if not text:
            raise InputError("No cells given: use L:T pairs such as 15:7, or 'all'.")
        if text == "all":
            return [(layer, token) for layer in range(grid.n_rows) for token in range(grid.n_tokens)]
        cells: list[tuple[int, int]] = []
        for part in text.split(","):
            part = part.strip()
            kind, _, rest = part.partition(":") if part.startswith(("row:", "col:")) else ("", "", part)
            try:
                pair = (int(rest), 0) if kind else tuple(int(x) for x in rest.split(":"))
            except ValueError:
                pair = ()
            if len(pair) != 2:
                what = f"{kind} number" if kind else "cell"
                raise InputError(f"'{shorten(part)}' is not a {what}: write LAYER:TOKEN (e.g. 15:7), row:L or col:T.")
            if kind == "row":
                grid.check_cell(pair[0], 0)  # out of range is said as such, with the grid's range
                cells += [(pair[0], t) for t in range(grid.n_tokens)]
            elif kind == "col":
                grid.check_cell(0, pair[0])
                cells += [(layer, pair[0]) for layer in range(grid.n_rows)]
            else:
                grid.check_cell(pair[0], pair[1])
                cells.append((pair[0], pair[1]))
        return cells
    out = []
    for cell in spec:
        try:
            layer, token = cell
        except (TypeError, ValueError) as e:
            raise InputError(f"{shorten(repr(cell))} is not a (layer, token) pair.") from e
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (layer, token)):
            raise InputError(f"A cell is a pair of whole numbers; got {shorten(repr(cell))}.")
        grid.check_cell(int(layer), int(token))
        out.append((int(layer), int(token)))
    return out
