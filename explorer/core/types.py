"""What the explorer needs of a tokenizer and a causal LM, as Protocols.

Hugging Face classes satisfy them without inheriting; the type checker then checks every call the
core and the engine make, instead of treating the model and tokenizer as ``object``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import nn


class Tokenizer(Protocol):
    """The tokenizer calls the explorer makes (``PreTrainedTokenizerBase`` has them all)."""

    chat_template: str | None
    eos_token_id: int | None
    pad_token_id: int | None
    eos_token: str | None
    pad_token: str | None

    def encode(self, text: str, add_special_tokens: bool = ..., **kwargs: Any) -> list[int]: ...

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = ..., **kwargs: Any) -> str: ...

    def convert_ids_to_tokens(self, ids: Any, **kwargs: Any) -> Any: ...

    def convert_tokens_to_ids(self, tokens: Any) -> Any: ...

    def apply_chat_template(self, conversation: Any, **kwargs: Any) -> Any: ...

    def __len__(self) -> int: ...


class CausalLM(Protocol):
    """A causal LM module with a config, a forward returning logits, and ``generate``."""

    config: Any
    generation_config: Any

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...

    def generate(self, *args: Any, **kwargs: Any) -> Any: ...

    def named_modules(self, *args: Any, **kwargs: Any) -> Iterator[tuple[str, nn.Module]]: ...

    def parameters(self, recurse: bool = ...) -> Iterator[nn.Parameter]: ...

    def buffers(self, recurse: bool = ...) -> Iterator[torch.Tensor]: ...

    def get_input_embeddings(self) -> nn.Module: ...

    def get_output_embeddings(self) -> nn.Module | None: ...
