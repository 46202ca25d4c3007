"""What a session changes in the model, as one value: its control edit and its concept steering.

Every tab that reads the model runs under the session's :class:`ModelState` (``with state.applied(lm)``),
so Explore, Compare, Evaluate, Cross-model and Concepts all see the same model, and the banner is
drawn from the same value. Changing it (Apply, Revert, Steer, import) replaces the value; nothing
assigns into it. The state also travels to a ZeroGPU worker as a picklable :meth:`payload`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace

from explorer.core.hooks import MODEL_VARIANT
from explorer.core.models import LoadedModel
from explorer.methods.concepts.concept import Steering
from explorer.methods.control.edit import Edit, applied


@dataclass(frozen=True)
class ModelState:
    """A session's changes to the model (both None: the stock model)."""

    edit: Edit | None = None
    steering: Steering | None = None

    @property
    def is_stock(self) -> bool:
        return self.edit is None and self.steering is None

    @contextlib.contextmanager
    def applied(self, lm: LoadedModel) -> Iterator[str | None]:
        """Run ``lm`` with the edit and the steering in this context; yields the variant they make."""
        steer = self.steering.context(lm) if self.steering is not None else contextlib.nullcontext()
        with applied(lm, self.edit), steer:
            yield MODEL_VARIANT.get()

    def variant(self, lm: LoadedModel) -> str | None:
        """The variant tag readings made under this state record (None: the stock model)."""
        if self.is_stock:
            return None
        with self.applied(lm) as tag:
            return tag

    def with_edit(self, edit: Edit | None) -> ModelState:
        return replace(self, edit=edit)

    def with_steering(self, steering: Steering | None) -> ModelState:
        return replace(self, steering=steering)

    def parts(self) -> list[str]:
        """One plain phrase per change, for banners and status lines ([] for the stock model)."""
        out = []
        if self.edit is not None:
            meta = self.edit.meta or {}
            kind = meta.get("kind") or meta.get("method") or "control"
            out.append(f"control edit {self.edit.edit_id} ({kind}, block {self.edit.layer - 1}'s MLP, row "
                       f"{self.edit.layer})")
        if self.steering is not None:
            out.append(self.steering.describe())
        return out

    def describe(self) -> str:
        parts = self.parts()
        return "the stock model" if not parts else " and ".join(parts)

    def payload(self) -> dict:
        """A picklable copy (CPU tensors, plain values) for a worker process."""
        edit = None
        if self.edit is not None:
            edit = {"layer": int(self.edit.layer), "meta": dict(self.edit.meta),
                    "params": {k: v.detach().to("cpu") for k, v in self.edit.params.items()}}
        return {"edit": edit, "steering": self.steering}

    @classmethod
    def from_payload(cls, payload: dict | None) -> ModelState:
        if not payload:
            return cls()
        e = payload.get("edit")
        edit = None if e is None else Edit(layer=e["layer"], params=e["params"], meta=e["meta"])
        return cls(edit, payload.get("steering"))
