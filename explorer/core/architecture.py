"""Finding a model's parts (blocks, MLPs, norms, unembedding) without per-model forks.

Name patterns cover Llama, Qwen2, Mistral, Gemma 2/3, GPT-2, GPT-NeoX and Phi-3; any other layout
passes ``overrides`` with dotted paths. The logit lens lives here, in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

import torch
from torch import nn

from explorer.core.errors import ModelLoadError
from explorer.core.types import CausalLM

_FINAL_NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "norm_f", "final_norm")
_MLP_NAMES = ("mlp", "feed_forward", "ffn", "block_sparse_moe", "moe")
_MLP_NORM_NAMES = (
    "pre_feedforward_layernorm",  # Gemma 2/3: the norm right before the MLP
    "post_attention_layernorm",  # Llama, Qwen2, Mistral, Phi-3, GPT-NeoX
    "ln_2",  # GPT-2
    "ffn_norm",
)
_MLP_OUT_NORM_NAMES = ("post_feedforward_layernorm",)  # Gemma 2/3 normalise the MLP output


def _get_path(root: nn.Module, path: str) -> nn.Module:
    obj: object = root
    try:
        for part in path.split("."):
            obj = obj[int(part)] if part.isdigit() else getattr(obj, part)  # type: ignore[index]
    except (AttributeError, IndexError, TypeError):
        obj = None
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"'{path}' is not a module of this model.")
    return obj


def _first_child(module: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    for name in names:
        child = getattr(module, name, None)
        if isinstance(child, nn.Module):
            return child
    return None


@dataclass
class Architecture:
    """Handles on the parts every method needs, found by name patterns with an override.

    ``blocks[i]`` is decoder block i; its input is ``hidden_states[i]`` and its output
    ``hidden_states[i + 1]`` (docs/methods.md). ``mlps[i]`` is block i's MLP and
    ``mlp_norms[i]`` the norm whose output the MLP reads. ``mlp_out_norms[i]`` is set for
    architectures (Gemma 2/3) that normalise the MLP output before adding it to the residual.
    """

    blocks: list[nn.Module]
    embed: nn.Module
    final_norm: nn.Module | None
    unembed: nn.Module
    mlps: list[nn.Module]
    mlp_norms: list[nn.Module | None]
    mlp_out_norms: list[nn.Module | None] = field(default_factory=list)
    logit_softcap: float | None = None  # Gemma 2 caps its final logits: cap * tanh(logits / cap)

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    @property
    def embed_weight(self) -> torch.Tensor:
        """The input embedding matrix (V, d): its device and dtype are the model's."""
        weight = self.embed.weight
        if not isinstance(weight, torch.Tensor):
            raise ModelLoadError("The input embedding has no weight matrix.")
        return weight

    @classmethod
    def find(cls, model: nn.Module, overrides: dict[str, str] | None = None) -> Architecture:
        """Locate blocks, MLPs, norms and unembedding; ``overrides`` maps a part to a dotted path.

        Keys of ``overrides``: ``blocks``, ``embed``, ``final_norm``, ``unembed`` (paths from the
        model root) and ``mlp``, ``mlp_norm`` (paths inside a block).
        """
        overrides = dict(overrides or {})
        config = getattr(model, "config", None)
        text_config = config.get_text_config() if config is not None else None
        n_layers = getattr(text_config, "num_hidden_layers", None) or getattr(text_config, "n_layer", None)

        if "blocks" in overrides:
            block_list = _get_path(model, overrides["blocks"])
        else:
            candidates = [
                (name, m)
                for name, m in model.named_modules()
                if isinstance(m, nn.ModuleList) and len(m) > 0 and (n_layers is None or len(m) == n_layers)
            ]
            if not candidates:
                raise ModelLoadError(
                    "Could not find the decoder blocks of this model; pass overrides={'blocks': 'path.to.layers'}."
                )
            # The decoder stack is the list holding the most parameters.
            block_list = max(candidates, key=lambda c: sum(p.numel() for p in c[1].parameters()))[1]
        if not isinstance(block_list, nn.ModuleList | nn.Sequential):
            raise ModelLoadError("The 'blocks' override must name a list of decoder blocks.")
        blocks = list(block_list)

        hf = cast(CausalLM, model)
        embed = _get_path(model, overrides["embed"]) if "embed" in overrides else hf.get_input_embeddings()
        unembed = _get_path(model, overrides["unembed"]) if "unembed" in overrides else hf.get_output_embeddings()
        if unembed is None:
            raise ModelLoadError("This model has no output embedding (is it a causal LM?).")

        if "final_norm" in overrides:
            final_norm: nn.Module | None = _get_path(model, overrides["final_norm"])
        else:
            final_norm = None
            base = getattr(model, "get_decoder", lambda: model)()
            for holder in (base, model):
                final_norm = _first_child(holder, _FINAL_NORM_NAMES)
                if final_norm is not None:
                    break

        def inside(block: nn.Module, key: str, names: tuple[str, ...]) -> nn.Module | None:
            if key in overrides:
                return _get_path(block, overrides[key])
            return _first_child(block, names)

        mlps = []
        for i, block in enumerate(blocks):
            mlp = inside(block, "mlp", _MLP_NAMES)
            if mlp is None:
                raise ModelLoadError(f"Could not find the MLP of block {i}; pass overrides={{'mlp': 'name'}}.")
            mlps.append(mlp)
        mlp_norms = [inside(b, "mlp_norm", _MLP_NORM_NAMES) for b in blocks]
        mlp_out_norms = [_first_child(b, _MLP_OUT_NORM_NAMES) for b in blocks]
        softcap = getattr(text_config, "final_logit_softcapping", None)
        return cls(blocks, embed, final_norm, unembed, mlps, mlp_norms, mlp_out_norms, softcap)

    def logit_lens(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm then unembedding applied to residual-stream states ``(..., d) -> (..., V)``."""
        x = self.final_norm(hidden) if self.final_norm is not None else hidden
        logits = self.unembed(x)
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits
