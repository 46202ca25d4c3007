"""Causal tracing's passes (Meng et al. 2022, "Locating and Editing Factual Associations in GPT").

One clean pass records every row's states and the arguments each block was called with; one batched
corrupted pass (one sequence per noise sample) adds Gaussian noise to the subject's rows-0 states at
the input of block 0 and records every row again. Restoring a cell (row L, token t) is then a pass
from block L on: the corrupted run's row L with position t set to its clean state, run through blocks
L..N-1 by calling each block with its recorded arguments (attention mask, rotary embeddings), then
the final norm and unembedding at the last position. Nothing before block L is recomputed, and many
cells x samples share one batched pass. Row N (the last block's output) has no block after it: the
logit lens of the restored last position is read directly.

With ``kind="mlp"`` a cell (L, t) instead restores, at token t, the MLP outputs of a window of blocks
centred on block L-1 (the block that wrote row L), through the MLPs' own output hooks; the pass
starts at the window's first block.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from explorer.core.data import CORPUS
from explorer.core.hooks import edit_input, edit_output, record, record_calls, replay
from explorer.core.models import LoadedModel
from explorer.core.stop import checkpoint
from explorer.methods.tracing.inputs import TraceSettings

STD_TOKENS = 512

# A restoration: (row, positions restored together at that row).
Cell = tuple[int, tuple[int, ...]]


def embedding_std(lm: LoadedModel) -> float:
    """The standard deviation of the embedding output (row 0; every coordinate of the first 512 tokens
    of the shipped corpus) under the stock weights, whatever the caller has applied; kept by the model
    (``lm.memo``)."""
    cached = lm.memo.get(("embedding_std", STD_TOKENS))
    if cached is not None:
        return cached
    ids = lm.tokenizer.encode(CORPUS.read_text(encoding="utf-8"), add_special_tokens=True)[:STD_TOKENS]

    def measure() -> float:
        with torch.inference_mode(), record([lm.arch.blocks[0]], inputs=True) as ins:
            lm.model(input_ids=torch.tensor([ids], device=lm.device), use_cache=False, logits_to_keep=1)
        return float(ins[0][-1].float().std())

    value = contextvars.Context().run(measure)  # a fresh context: no edit, steering or job of the caller's
    lm.memo.put(("embedding_std", STD_TOKENS), value)
    return value


def draw_noise(settings: TraceSettings, n_positions: int, width: int, std: float) -> torch.Tensor:
    """The noise added to the subject's row-0 states: (samples, positions, d), float32, from ``settings.seed``."""
    gen = torch.Generator(device="cpu").manual_seed(settings.seed)
    return torch.randn(settings.samples, n_positions, width, generator=gen) * float(settings.noise * std)


def answer_prob(lm: LoadedModel, last: torch.Tensor, answer_id: int) -> torch.Tensor:
    """p(answer) from states of the last position (B, d): final norm, unembedding, softmax in float64
    (256 rows at a time, so a large batch's vocabulary-wide float64 logits stay small)."""
    out = []
    for part in last.split(256):
        logits = lm.arch.logit_lens(part.to(lm.device, lm.dtype)).double()
        out.append(torch.softmax(logits, dim=-1)[:, answer_id].cpu())
    return torch.cat(out)


@dataclass
class TraceRun:
    """The clean and corrupted passes of one prompt, ready to restore cells.

    ``clean[L]``: (T, d) and ``corrupted[L]``: (samples, T, d) for rows L = 0..N, on the device of the
    block that made them; ``clean_mlp[i]``: (T, d) block i's MLP output (MLP traces only); ``calls[i]``:
    the arguments block i was called with in the clean pass (batch 1, broadcast to any batch).
    """

    lm: LoadedModel
    ids: list[int]
    answer_id: int
    positions: list[int]
    settings: TraceSettings
    noise_std: float
    clean: list[torch.Tensor]
    corrupted: list[torch.Tensor]
    calls: list[tuple[tuple, dict]]
    clean_mlp: list[torch.Tensor] | None
    p_clean: float
    p_corrupted_samples: np.ndarray

    @property
    def p_corrupted(self) -> float:
        return float(self.p_corrupted_samples.mean())

    @property
    def n_tokens(self) -> int:
        return len(self.ids)

    def run_from(self, start: int, hidden: torch.Tensor) -> torch.Tensor:
        """Blocks ``start``..N-1 applied to ``hidden`` (B, T, d) with their recorded arguments."""
        for i in range(start, self.lm.n_layers):
            hidden = replay(self.lm.arch.blocks[i], self.calls[i], hidden)
        return hidden

    def restore(self, cells: Sequence[Cell], *, on_step: Callable[[int, int], None] | None = None,
                should_stop: Callable[[], bool] | None = None) -> np.ndarray | None:
        """p(answer) with each cell's clean state(s) restored into the corrupted run, averaged over the
        noise samples: (len(cells),) float64. Cells of one row share batched passes; ``on_step(done,
        total)`` follows the rows; a stopped run (``should_stop``) returns None."""
        samples = self.settings.samples
        per_pass = max(1, self.settings.max_batch_tokens // self.n_tokens)
        sums = np.zeros(len(cells))
        rows = sorted({row for row, _ in cells})
        for done, row in enumerate(rows):
            jobs = [(c, s) for c, (r, _) in enumerate(cells) if r == row for s in range(samples)]
            for start in range(0, len(jobs), per_pass):
                if should_stop is not None and should_stop():
                    return None
                checkpoint()
                part = jobs[start:start + per_pass]
                probs = self._pass(row, [cells[c][1] for c, _ in part], [s for _, s in part])
                np.add.at(sums, [c for c, _ in part], probs)
            if on_step is not None:
                on_step(done + 1, len(rows))
        return sums / samples

    def _mask(self, positions: Sequence[tuple[int, ...]], device: torch.device) -> torch.Tensor:
        mask = torch.zeros(len(positions), self.n_tokens, 1, dtype=torch.bool)
        for i, pos in enumerate(positions):
            mask[i, list(pos)] = True
        return mask.to(device)

    def _pass(self, row: int, positions: list[tuple[int, ...]], samples: list[int]) -> np.ndarray:
        with torch.inference_mode():
            if self.settings.kind == "mlp":
                return self._mlp_pass(row, positions, samples)
            corrupted = self.corrupted[row][samples]
            mask = self._mask(positions, corrupted.device)
            hidden = torch.where(mask, self.clean[row][None], corrupted)
            if row < self.lm.n_layers:
                hidden = self.run_from(row, hidden)
            return answer_prob(self.lm, hidden[:, -1], self.answer_id).numpy()

    def window(self, row: int) -> range:
        """The blocks whose MLP outputs an MLP trace restores for ``row`` (centred on block row-1)."""
        w = self.settings.window
        centre = row - 1
        return range(max(0, centre - w // 2), min(self.lm.n_layers, centre + w - w // 2))

    def _mlp_pass(self, row: int, positions: list[tuple[int, ...]], samples: list[int]) -> np.ndarray:
        assert self.clean_mlp is not None and row >= 1
        blocks = self.window(row)
        with contextlib.ExitStack() as stack:
            for i in blocks:
                clean = self.clean_mlp[i]
                mask = self._mask(positions, clean.device)

                def put(out: torch.Tensor, _args: tuple, clean: torch.Tensor = clean,
                        mask: torch.Tensor = mask) -> torch.Tensor:
                    return torch.where(mask.to(out.device), clean[None].to(out.device, out.dtype), out)

                stack.enter_context(edit_output(self.lm.arch.mlps[i], put, variant=None))
            hidden = self.run_from(blocks.start, self.corrupted[blocks.start][samples])
        return answer_prob(self.lm, hidden[:, -1], self.answer_id).numpy()


def prepare(lm: LoadedModel, ids: list[int], answer_id: int, positions: list[int], settings: TraceSettings) -> TraceRun:
    """The clean pass (states, block arguments, MLP outputs) and the corrupted pass (one sequence per
    noise sample), in the caller's context: a trace under a control edit traces the edited model."""
    arch, n = lm.arch, lm.n_layers
    input_ids = torch.tensor([ids], device=lm.device)
    std = embedding_std(lm)
    mlp = settings.kind == "mlp"
    with torch.inference_mode():
        with record_calls(arch.blocks) as calls, record(arch.blocks, inputs=True) as ins, \
                record([arch.blocks[-1]]) as outs, (record(arch.mlps) if mlp else contextlib.nullcontext()) as mlps:
            lm.model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
        clean = [ins[i][-1][0] for i in range(n)] + [outs[0][-1][0]]
        noise = draw_noise(settings, len(positions), lm.hidden_size, std)

        def corrupt(hidden: torch.Tensor) -> torch.Tensor:
            out = hidden.clone()
            out[:, positions] += noise.to(hidden.device, hidden.dtype)
            return out

        with edit_input(arch.blocks[0], corrupt, variant=None), record(arch.blocks, inputs=True) as c_ins, \
                record([arch.blocks[-1]]) as c_outs:
            lm.model(input_ids=input_ids.expand(settings.samples, -1), use_cache=False, logits_to_keep=1)
        corrupted = [c_ins[i][-1] for i in range(n)] + [c_outs[0][-1]]
        p_clean = float(answer_prob(lm, clean[n][-1:], answer_id)[0])
        p_corrupted = answer_prob(lm, corrupted[n][:, -1], answer_id).numpy()
    return TraceRun(lm, list(ids), int(answer_id), list(positions), settings, std, clean, corrupted,
                    [c[-1] for c in calls], [m[-1][0] for m in mlps] if mlp else None, p_clean, p_corrupted)
