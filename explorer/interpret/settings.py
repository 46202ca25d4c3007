"""What determines an interpretation besides the state: template, K, k, length, strength."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from explorer.core.errors import InputError
from explorer.core.files import shorten
from explorer.core.models import LoadedModel
from explorer.core.prompts import InterpretationPrompt, Template, get_template

MAX_NEW_TOKENS_LIMIT = 256
MAX_BATCH_SIZE = 256


@dataclass(frozen=True)
class InterpretSettings:
    """Everything that determines an interpretation besides the state itself.

    ``k``: the block whose input receives the state (0 = the embedding output). ``strength`` s
    writes ``s*h + (1-s)*old`` (1 = full replacement, the paper's setting).
    """

    template: Template
    n_placeholders: int = 5
    k: int = 1
    max_new_tokens: int = 20
    strength: float = 1.0
    # A ready-made target prompt (Patchscopes: any prompt and positions); overrides the template's.
    prompt: InterpretationPrompt | None = None

    def validate(self, n_layers: int) -> InterpretSettings:
        self.template.validate()
        check_int("number of placeholders", self.n_placeholders, 1, 64)
        check_int("injection layer k", self.k, 0, n_layers - 1)
        check_int("max new tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT)
        if not isinstance(self.strength, (int, float)) or not 0.0 < float(self.strength) <= 4.0:
            raise InputError("The injection strength must be a number above 0 and at most 4.")
        return self

    def key(self) -> tuple:
        t = self.template
        custom = (self.prompt.ids, self.prompt.placeholder_positions) if self.prompt is not None else None
        return (t.user, t.lead_in, t.system, t.chat, self.n_placeholders, self.k, self.max_new_tokens,
                float(self.strength), custom)

    def to_dict(self) -> dict:
        return {"template": self.template.name, "template_user": self.template.user,
                "template_lead_in": self.template.lead_in, "n_placeholders": self.n_placeholders,
                "k": self.k, "max_new_tokens": self.max_new_tokens, "strength": self.strength}


def check_int(name: str, value, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"The {name} must be a whole number from {lo} to {hi}; got {shorten(repr(value))}.")
    if not lo <= int(value) <= hi:
        raise InputError(f"The {name} must be from {lo} to {hi}; got {shorten(str(value))}.")


def make_settings(lm: LoadedModel, template: str | Template | None = None, *, n_placeholders: int = 5,
                  k: int = 1, max_new_tokens: int = 20, strength: float = 1.0) -> InterpretSettings:
    """Settings with the template resolved for this model (chat or plain text) and validated."""
    tpl = get_template(template, has_chat_template=lm.has_chat_template)
    return InterpretSettings(tpl, n_placeholders, k, max_new_tokens, strength).validate(lm.n_layers)
