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
from explorer.core.files import readable_file, shorten

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
    p = readable_file(path, "prompts file")
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
                     f"its columns are {shorten(', '.join(names), 120) or 'none'}.")


def _lines(path: Path, newline: str | None = None) -> Iterator[str]:
    """The file's lines, decoded as UTF-8; a byte that is not UTF-8 stops the run with the line it is on."""
    n = 0
    with path.open(encoding="utf-8", newline=newline) as f:
        try:
            for n, line in enumerate(f, 1):  # noqa: B007 - n is read after a failure
                yield line
        except UnicodeDecodeError:
            raise InputError(f"The prompts file '{shorten(str(path), 200)}' is not UTF-8 text (a byte on or after "
                             f"line {n + 1} cannot be decoded); save it as UTF-8.") from None


def _text(path: Path) -> Iterator[PromptRow]:
    for i, line in enumerate(_lines(path)):
        line = line.rstrip("\r\n")
        if line.strip():
            yield PromptRow(i, line)


def _csv(path: Path, column: str | None) -> Iterator[PromptRow]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.DictReader(_lines(path, newline=""))
    try:
        col = _pick_column(list(reader.fieldnames or []), column, path)
        for i, row in enumerate(reader):
            value = row.get(col)
            if value is None:
                yield PromptRow(i, None, f"row {i + 1} has no value in column '{col}'")
            else:
                yield PromptRow(i, value)
    except csv.Error as e:
        raise InputError(f"'{path.name}' is not a readable CSV file ({e}).") from None


def _jsonl(path: Path, column: str | None) -> Iterator[PromptRow]:
    for i, line in enumerate(_lines(path)):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            yield PromptRow(i, None, f"line {i + 1} is not valid JSON ({e.msg})")
            continue
        except RecursionError:
            yield PromptRow(i, None, f"line {i + 1} is JSON nested too deeply to read")
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
    f = _parquet_file(path)
    col = _pick_column(f.schema_arrow.names, column, path)
    i = 0
    for batch in f.iter_batches(batch_size=1024, columns=[col]):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str):
                yield PromptRow(i, value)
            else:
                yield PromptRow(i, None, f"row {i + 1} has no text in column '{col}'")
            i += 1


def _parquet_file(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError):
        raise InputError(f"'{path.name}' is not a readable Parquet file.") from None


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
        return int(_parquet_file(Path(path)).metadata.num_rows)
    return sum(1 for _ in read_prompts(path, column))


def require_prompts(path: str | Path, column: str | None = None) -> int:
    """``count_rows``, refusing a file with no prompts (empty, or only blank lines) with one sentence."""
    n = count_rows(path, column)
    if n == 0:
        raise InputError(f"The prompts file '{shorten(str(path), 200)}' holds no prompts: there is nothing to "
                         "interpret.")
    return n
