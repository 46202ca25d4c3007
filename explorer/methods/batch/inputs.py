"""Prompts streamed from a file: text lines, CSV, JSONL or Parquet, one record at a time.

``index`` is the record's 0-based position (for text files, its line number minus one; blank
lines are skipped). A record that cannot be read carries an ``error`` instead of a prompt, so the
run reports and skips it instead of stopping.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from explorer.core.errors import InputError

COLUMNS = ("prompt", "text")
FORMATS = {".txt": "text", ".text": "text", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".parquet": "parquet", ".pq": "parquet"}


@dataclass(frozen=True)
class PromptRow:
    """One input record: ``prompt`` or, for a record that could not be read, ``error``."""

    index: int
    prompt: str | None
    error: str | None = None


def file_format(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"The prompts file '{path}' does not exist.")
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise InputError(f"'{p.name}' has an unknown extension: use .txt, .csv, .jsonl or .parquet.")
    return fmt


def _pick_column(names: list[str], column: str | None, path: str | Path) -> str:
    wanted = [column] if column else list(COLUMNS)
    for name in wanted:
        if name in names:
            return name
    raise InputError(f"'{Path(path).name}' has no {' or '.join(repr(w) for w in wanted)} column; "
                     f"its columns are {', '.join(names) or 'none'}.")


def _text(path: Path) -> Iterator[PromptRow]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            line = line.rstrip("\r\n")
            if line.strip():
                yield PromptRow(i, line)


def _csv(path: Path, column: str | None) -> Iterator[PromptRow]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with path.open(encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f)
        col = _pick_column(list(reader.fieldnames or []), column, path)
        for i, row in enumerate(reader):
            value = row.get(col)
            if value is None:
                yield PromptRow(i, None, f"row {i + 1} has no value in column '{col}'")
            else:
                yield PromptRow(i, value)


def _jsonl(path: Path, column: str | None) -> Iterator[PromptRow]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield PromptRow(i, None, f"line {i + 1} is not valid JSON ({e.msg})")
                continue
            if isinstance(obj, str):
                yield PromptRow(i, obj)
                continue
            keys = [column] if column else list(COLUMNS)
            value = next((obj[k] for k in keys if isinstance(obj, dict) and k in obj), None)
            if not isinstance(value, str):
                yield PromptRow(i, None, f"line {i + 1} has no text in {' or '.join(repr(k) for k in keys)}")
            else:
                yield PromptRow(i, value)


def _parquet(path: Path, column: str | None) -> Iterator[PromptRow]:
    import pyarrow.parquet as pq

    f = pq.ParquetFile(path)
    col = _pick_column(f.schema_arrow.names, column, path)
    i = 0
    for batch in f.iter_batches(batch_size=1024, columns=[col]):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str):
                yield PromptRow(i, value)
            else:
                yield PromptRow(i, None, f"row {i + 1} has no text in column '{col}'")
            i += 1


def read_prompts(path: str | Path, column: str | None = None) -> Iterator[PromptRow]:
    """Stream the records of ``path`` (format from its extension); ``column`` defaults to prompt/text."""
    fmt = file_format(path)
    p = Path(path)
    if fmt == "text":
        return _text(p)
    if fmt == "csv":
        return _csv(p, column)
    if fmt == "jsonl":
        return _jsonl(p, column)
    return _parquet(p, column)


def count_rows(path: str | Path, column: str | None = None) -> int:
    """How many records ``read_prompts`` yields (one streaming pass; Parquet from its metadata)."""
    if file_format(path) == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    return sum(1 for _ in read_prompts(path, column))
