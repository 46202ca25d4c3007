"""Interpretation templates and the token ids they become, with exact placeholder positions.

Placeholder positions are found from the token ids themselves: the rendered prompt is split at a
sentinel, each segment is tokenised on its own, and K placeholder ids are placed between them.
Re-tokenising string prefixes (the original research code) shifts positions when the tokenizer
merges across the boundary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from explorer.core.errors import InputError

PLACEHOLDER = "{X}"
NEUTRAL_SYSTEM = "You are a concise assistant."
MAX_PLACEHOLDERS = 64
MAX_TEMPLATE_CHARS = 2000
_SENTINEL = "\u2063SELFIE_SLOT\u2063"


@dataclass(frozen=True)
class Template:
    """An interpretation template.

    ``user`` holds exactly one ``{X}`` marker, which becomes K placeholder tokens; ``lead_in``
    starts the assistant's answer. ``chat`` renders through the tokenizer's chat template with a
    short neutral ``system`` message (SmolLM2's default persona otherwise leaks into readings);
    ``chat=False`` is plain text for base models (``user`` then ``lead_in``).
    """

    name: str
    user: str
    lead_in: str
    system: str | None = NEUTRAL_SYSTEM
    chat: bool = True

    def validate(self) -> Template:
        count = self.user.count(PLACEHOLDER)
        if count == 0:
            raise InputError(f"The template has no placeholder: put {PLACEHOLDER} where the hidden state goes.")
        if count > 1:
            raise InputError(f"The template has {count} placeholders; use exactly one {PLACEHOLDER} "
                             "(the number of placeholder tokens is a separate setting).")
        if PLACEHOLDER in self.lead_in or (self.system and PLACEHOLDER in self.system):
            raise InputError(f"Only the user text may hold the placeholder {PLACEHOLDER}.")
        if len(self.user) + len(self.lead_in) + len(self.system or "") > MAX_TEMPLATE_CHARS:
            raise InputError(f"The template is longer than {MAX_TEMPLATE_CHARS} characters.")
        return self

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, Template] = {
    # The paper's template: placeholders alone, then "summarize".
    "summarize": Template("summarize", PLACEHOLDER, "Sure, I will summarize the message:"),
    # Short answers read better on small models (measured on SmolLM2-135M).
    "refers_to": Template("refers_to", f"What does this refer to: {PLACEHOLDER} ? Answer in a few words.",
                          "It refers to"),
    # Used by Reinforcement Control: list the things mentioned.
    "mentions": Template("mentions", PLACEHOLDER, "The things mentioned in the message are:"),
    # For base models without a chat template.
    "base": Template("base", f"Text: {PLACEHOLDER}\nIn a few words, the text above is about", "", None, chat=False),
}
DEFAULT_PRESET = "refers_to"


def get_template(template: str | Template | None, *, has_chat_template: bool = True) -> Template:
    """A preset by name, a Template, or custom text holding ``{X}`` (lead-in after a ``|``)."""
    if template is None:
        return PRESETS[DEFAULT_PRESET if has_chat_template else "base"]
    if isinstance(template, Template):
        t = template
    elif template in PRESETS:
        t = PRESETS[template]
    else:
        if not isinstance(template, str) or not template.strip():
            raise InputError("The template is empty.")
        user, _, lead_in = template.partition("|")
        t = Template("custom", user.strip(), lead_in.strip(), chat=has_chat_template)
    if t.chat and not has_chat_template:
        t = Template(t.name, t.user, t.lead_in, None, chat=False)
    return t.validate()


@dataclass(frozen=True)
class InterpretationPrompt:
    """Token ids of an interpretation prompt and the positions of its K placeholders."""

    ids: tuple[int, ...]
    placeholder_positions: tuple[int, ...]
    placeholder_id: int
    template: Template

    @property
    def n_placeholders(self) -> int:
        return len(self.placeholder_positions)

    @property
    def first_placeholder(self) -> int:
        return self.placeholder_positions[0]


def placeholder_token_id(tokenizer, after_space: bool = False) -> int:
    """A single token id for "_" (with a leading space, unless the text before ends in one)."""
    for text in (("_", " _") if after_space else (" _", "_")):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) == 1:
            return int(ids[0])
    ids = tokenizer.encode("_", add_special_tokens=False)
    return int(ids[-1])


def _render_chat(tokenizer, template: Template) -> str:
    user = template.user.replace(PLACEHOLDER, _SENTINEL)
    messages = [{"role": "user", "content": user}]
    if template.system:
        messages.insert(0, {"role": "system", "content": template.system})
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception:
        merged = [{"role": "user", "content": f"{template.system}\n\n{user}" if template.system else user}]
        text = tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
    return text + template.lead_in


def build_interpretation_prompt(tokenizer, template: Template, n_placeholders: int = 5) -> InterpretationPrompt:
    """Render ``template`` with ``n_placeholders`` placeholder tokens and record their positions."""
    if not isinstance(n_placeholders, int) or not 1 <= n_placeholders <= MAX_PLACEHOLDERS:
        raise InputError(f"The number of placeholders must be a whole number from 1 to {MAX_PLACEHOLDERS}.")
    template.validate()
    if template.chat:
        rendered = _render_chat(tokenizer, template)
        before, _, after = rendered.partition(_SENTINEL)
        before_ids = tokenizer.encode(before, add_special_tokens=False)
    else:
        before, _, after = (template.user.replace(PLACEHOLDER, _SENTINEL) + template.lead_in).partition(_SENTINEL)
        before_ids = tokenizer.encode(before, add_special_tokens=True) if before else []
        bos = getattr(tokenizer, "bos_token_id", None)
        if not before and bos is not None and tokenizer.encode("a", add_special_tokens=True)[:1] == [bos]:
            before_ids = [bos]
    after_ids = tokenizer.encode(after, add_special_tokens=False) if after else []
    pid = placeholder_token_id(tokenizer, after_space=not before or before[-1].isspace())
    start = len(before_ids)
    ids = tuple(int(i) for i in before_ids) + (pid,) * n_placeholders + tuple(int(i) for i in after_ids)
    positions = tuple(range(start, start + n_placeholders))
    return InterpretationPrompt(ids=ids, placeholder_positions=positions, placeholder_id=pid, template=template)


def source_prompt_ids(tokenizer, text: str, *, chat: bool = False) -> list[int]:
    """The ids of a user's prompt as the model sees it (optionally wrapped as a chat turn)."""
    if chat and getattr(tokenizer, "chat_template", None):
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return [int(i) for i in tokenizer.encode(rendered, add_special_tokens=False)]
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=True)]
