"""What a causal trace needs from the user, checked: the prompt's tokens, the subject's positions, the answer.

The subject is found in the prompt by text: its characters are matched in the prompt as the model
sees it (the decoded token ids) and every token that overlaps them is a subject token. Without a
subject the first run of capitalised words is taken (a leading "The", "In", ... dropped), which finds
"Eiffel Tower" in "The Eiffel Tower is in the city of"; anything subtler is named by the caller.
The answer is measured by its first token, tokenised as a continuation of the prompt.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from explorer.core.errors import InputError

# Longest prompt (tokens) and most traced positions (from the first subject token on): a trace runs
# about rows x positions x samples passes of the prompt, so its cost grows with the square of its length.
MAX_TRACE_TOKENS = 256
MAX_TRACED_POSITIONS = 64
MAX_SAMPLES = 100
KINDS = ("state", "mlp")

# Capitalised words that open sentences and questions rather than name things.
_OPENERS = {
    "the", "a", "an", "in", "on", "at", "of", "for", "to", "from", "by", "with", "and", "or", "but", "if", "as",
    "it", "its", "this", "that", "these", "those", "there", "here", "what", "who", "whom", "whose", "where", "when",
    "which", "how", "why", "he", "she", "they", "we", "i", "you", "my", "his", "her", "their", "our", "your", "is",
    "was", "are", "were", "do", "does", "did", "can", "could", "will", "would", "should", "may", "might", "yes",
    "no", "not", "after", "before", "during", "today", "yesterday", "tomorrow",
}
_PUNCTUATION = ".,;:!?\"'()[]{}«»“”‘’"


@dataclass(frozen=True)
class TraceSettings:
    """How a trace corrupts and restores.

    ``samples``: noise draws averaged (ROME: 10); ``noise``: the noise's standard deviation as a multiple
    of the embeddings' (ROME: 3); ``seed`` seeds the draws; ``kind``: "state" restores a cell's residual
    state, "mlp" restores the MLP outputs of a window of ``window`` blocks around the cell's block;
    ``max_batch_tokens`` bounds one batched pass (sequences x prompt tokens).
    """

    samples: int = 10
    noise: float = 3.0
    seed: int = 0
    kind: str = "state"
    window: int = 10
    max_batch_tokens: int = 16384

    def __post_init__(self) -> None:
        for name in ("samples", "seed", "window", "max_batch_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InputError(f"The trace's {name} must be a whole number; got {value!r}.")
        if not 1 <= self.samples <= MAX_SAMPLES:
            raise InputError(f"The number of noise samples must be from 1 to {MAX_SAMPLES}; got {self.samples}.")
        if isinstance(self.noise, bool) or not isinstance(self.noise, (int, float)) or not math.isfinite(self.noise) \
                or not 0 < self.noise <= 100:
            raise InputError(f"The noise level must be a number above 0 and at most 100; got {self.noise!r}.")
        if self.seed < 0:
            raise InputError(f"The seed must be 0 or more; got {self.seed}.")
        if self.kind not in KINDS:
            raise InputError(f"Unknown trace kind {self.kind!r}; use one of {', '.join(KINDS)}.")
        if not 1 <= self.window <= 64:
            raise InputError(f"The MLP window must be from 1 to 64 blocks; got {self.window}.")
        if self.max_batch_tokens < 1:
            raise InputError("max_batch_tokens must be at least 1.")

    def to_dict(self) -> dict:
        return {"samples": self.samples, "noise": self.noise, "seed": self.seed, "kind": self.kind,
                "window": self.window}


def token_spans(tokenizer, ids: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The decoded text of ``ids`` and each token's character span in it (prefix decodes, so the spans
    follow the text exactly as the tokenizer writes it back)."""
    spans = []
    previous = 0
    for i in range(len(ids)):
        end = len(tokenizer.decode(ids[: i + 1], skip_special_tokens=False, clean_up_tokenization_spaces=False))
        spans.append((previous, max(previous, end)))
        previous = max(previous, end)
    text = tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return text, spans


def guess_subject(text: str) -> str | None:
    """The first run of capitalised words in ``text`` (an opener such as "The" or "Where" does not start
    one; punctuation ends one); None if there is none."""
    run: list[str] = []
    for match in re.finditer(r"\S+", text):
        raw = match.group(0)
        word = raw.strip(_PUNCTUATION)
        if word and word[0].isupper() and (run or word.lower() not in _OPENERS):
            run.append(word)
        elif run:
            break
        if run and raw[-1] in ",;:!?)]}\"”":
            break
    return " ".join(run) or None


def subject_positions(tokenizer, ids: list[int], subject: str | None, prompt: str | None = None) -> tuple[str, list[int]]:
    """The subject (given, or guessed from ``prompt``) and the positions of the tokens it covers.

    Matched first exactly, then ignoring case; the first occurrence counts.
    """
    if subject is not None and not isinstance(subject, str):
        raise InputError(f"The subject must be text; got {type(subject).__name__}.")
    text, spans = token_spans(tokenizer, ids)
    if subject is None or not subject.strip():
        subject = guess_subject(prompt if prompt is not None else text)
        if subject is None:
            raise InputError("No subject was found in the prompt (it has no capitalised name): name the words to "
                             "corrupt (subject='water' in Python, --subject water on the command line).")
    subject = subject.strip()
    start = text.find(subject)
    if start < 0:
        start = text.lower().find(subject.lower())
    if start < 0:
        raise InputError(f"The subject {subject!r} does not occur in the prompt.")
    end = start + len(subject)
    positions = [i for i, (a, b) in enumerate(spans) if a < end and b > start]
    if not positions:
        raise InputError(f"The subject {subject!r} covers no token of the prompt.")
    return subject, positions


def answer_token_ids(tokenizer, prompt_text: str, answer: str) -> tuple[str, list[int]]:
    """The answer as measured (a space put in front when neither the prompt ends nor the answer starts
    with one, as the next word of a sentence is written) and its token ids; the first is measured."""
    if not isinstance(answer, str) or not answer.strip():
        raise InputError("The answer is empty: type the word the model should say next, e.g. ' Paris'.")
    if len(answer) > 200:
        raise InputError("The answer is longer than 200 characters; give the word the model should say next.")
    if not answer[0].isspace() and prompt_text and not prompt_text[-1].isspace():
        answer = " " + answer
    ids = [int(i) for i in tokenizer.encode(answer, add_special_tokens=False)]
    if not ids:
        raise InputError(f"The answer {answer!r} produced no tokens.")
    return answer, ids


def check_length(n_tokens: int, first_position: int) -> None:
    if n_tokens > MAX_TRACE_TOKENS:
        raise InputError(f"The prompt is {n_tokens} tokens long; causal tracing takes at most {MAX_TRACE_TOKENS}. "
                         "Shorten it.")
    traced = n_tokens - first_position
    if traced > MAX_TRACED_POSITIONS:
        raise InputError(f"The trace would restore {traced} positions (from the subject's first token on); the "
                         f"limit is {MAX_TRACED_POSITIONS}. Shorten the text after the subject.")
