"""Interpretation results: small dataclasses that serialise to pandas, CSV and JSON.

The columns of the original SelfIE ``interpret()`` output (prompt, interpretation, layer, token,
token_decoded, relevancy_score) are kept as a compatible view.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from explorer.core.files import loads_json

COMPAT_COLUMNS = ["prompt", "interpretation", "layer", "token", "token_decoded", "relevancy_score"]
EXTRA_COLUMNS = ["mean_relevancy", "token_texts", "generated_ids", "variant"]
# Per-reading settings carried on every exported row (names of ``InterpretSettings.to_dict``).
SETTING_COLUMNS = ["template", "template_user", "template_lead_in", "n_placeholders", "k", "max_new_tokens",
                   "strength"]


@dataclass
class CellInterpretation:
    """The SelfIE reading of one cell.

    ``token_texts``, ``p_with``, ``p_without`` and ``relevancy_score`` all have one entry per
    generated token (EOS and anything after it excluded). ``p_without`` and ``relevancy_score``
    are None until the relevancy pass has run (text is streamed first).
    """

    layer: int
    token: int
    token_decoded: str
    interpretation: str
    generated_ids: list[int]
    token_texts: list[str]
    p_with: list[float]
    p_without: list[float] | None = None
    relevancy_score: list[float] | None = None
    cached: bool = False
    partial: bool = False  # a token-by-token snapshot while decoding
    variant: str | None = None  # the model variant that produced it: None = stock weights, else edit/steering ids
    settings: dict | None = None  # what made it: template name and text, K, k, max new tokens, strength

    @property
    def mean_relevancy(self) -> float | None:
        if self.relevancy_score is None:
            return None
        return float(np.mean(self.relevancy_score)) if self.relevancy_score else 0.0

    @property
    def complete(self) -> bool:
        return self.relevancy_score is not None

    def to_record(self, prompt: str = "") -> dict:
        rec = {
            "prompt": prompt,
            "layer": self.layer,
            "token": self.token,
            "token_decoded": self.token_decoded,
            "interpretation": self.interpretation,
            "relevancy_score": None if self.relevancy_score is None else [round(float(x), 6)
                                                                         for x in self.relevancy_score],
            "mean_relevancy": None if self.mean_relevancy is None else round(self.mean_relevancy, 6),
            "token_texts": list(self.token_texts),
            "generated_ids": list(self.generated_ids),
            "variant": self.variant,
        }
        for key in SETTING_COLUMNS:
            rec[key] = (self.settings or {}).get(key)
        return rec

    def nbytes(self) -> int:
        return 200 + len(self.interpretation) * 2 + len(self.generated_ids) * 60


@dataclass
class InterpretationSet:
    """Interpretations of several cells of one prompt, with the provenance of every number."""

    prompt: str
    cells: list[CellInterpretation] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)

    def add(self, cell: CellInterpretation) -> None:
        for i, c in enumerate(self.cells):
            if (c.layer, c.token) == (cell.layer, cell.token):
                self.cells[i] = cell
                return
        self.cells.append(cell)

    def get(self, layer: int, token: int) -> CellInterpretation | None:
        for c in self.cells:
            if (c.layer, c.token) == (layer, token):
                return c
        return None

    def records(self) -> list[dict]:
        return [c.to_record(self.prompt) for c in sorted(self.cells, key=lambda c: (c.layer, c.token))]

    def to_frame(self, compat: bool = False) -> pd.DataFrame:
        """All columns, or with ``compat=True`` exactly the original ``interpret()`` columns."""
        frame = pd.DataFrame(self.records(), columns=[*COMPAT_COLUMNS, *EXTRA_COLUMNS, *SETTING_COLUMNS])
        frame["variant"] = frame["variant"].astype(object).where(frame["variant"].notna(), None)  # None: stock
        if compat:
            return frame[COMPAT_COLUMNS]
        return frame

    def to_csv(self, path: str | Path | None = None) -> str:
        frame = self.to_frame()
        for col in ("relevancy_score", "token_texts", "generated_ids"):
            frame[col] = frame[col].map(lambda v: json.dumps(v) if v is not None else "")
        for key, value in public_provenance(self.provenance).items():
            # the grid's variant is provenance of the grid; each reading's own is in "variant"
            column = "grid_edit_id" if key == "edit_id" else key
            if column not in frame.columns:  # a row's own settings win over the grid's
                frame[column] = "" if value is None else str(value)
        text = frame.to_csv(index=False)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    def to_parquet(self, path: str | Path) -> Path:
        """The full frame (list columns kept as lists) with the provenance as file metadata."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(self.to_frame(), preserve_index=False)
        meta = {**(table.schema.metadata or {}), b"explorer_provenance": json.dumps(self.provenance, default=str).encode()}
        pq.write_table(table.replace_schema_metadata(meta), str(path))
        return Path(path)

    def to_json(self, path: str | Path | None = None, *, with_provenance: bool = False) -> str:
        """A list of records; ``with_provenance`` wraps it as ``{"provenance": ..., "results": [...]}``."""
        recs = self.records()
        payload = {"provenance": public_provenance(self.provenance), "results": recs} if with_provenance else recs
        text = json.dumps(payload, ensure_ascii=False, indent=1, default=_json_default)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, text: str) -> InterpretationSet:
        data = loads_json(text, "The results text")
        prov = {}
        if isinstance(data, dict):
            prov, data = data.get("provenance", {}), data.get("results", [])
        prompt = data[0]["prompt"] if data else ""
        out = cls(prompt=prompt, provenance=prov)
        for r in data:
            out.add(CellInterpretation(
                layer=int(r["layer"]), token=int(r["token"]), token_decoded=r["token_decoded"],
                interpretation=r["interpretation"], generated_ids=list(r.get("generated_ids", [])),
                token_texts=list(r.get("token_texts", [])), p_with=[],
                relevancy_score=r.get("relevancy_score"), variant=r.get("variant") or r.get("edit_id") or None,
                settings={k: r[k] for k in SETTING_COLUMNS if r.get(k) is not None} or None,
            ))
        return out


def _looks_like_path(value: str) -> bool:
    return value.startswith(("/", "~", "\\\\")) or (len(value) > 2 and value[1] == ":" and value[2] in "\\/") \
        or value.startswith(("./", "../"))


def public_provenance(provenance: dict) -> dict:
    """Provenance fit to leave the server: file-system paths (a model's cache folder, a local
    .gguf) are cut to their last component, so an export never reveals the server's layout."""
    out = {}
    for key, value in provenance.items():
        if isinstance(value, str) and _looks_like_path(value):
            value = Path(value.replace("\\", "/")).name or None
        out[key] = value
    return out


def _json_default(o):
    if isinstance(o, (np.floating,)):
        return None if math.isnan(float(o)) else float(o)
    if isinstance(o, np.integer):
        return int(o)
    if hasattr(o, "to_dict"):
        return o.to_dict()
    try:
        return asdict(o)
    except TypeError:
        return str(o)
