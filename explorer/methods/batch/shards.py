"""Parquet shards of a batch run: atomic writes, what is already done, and the merge.

A shard holds the rows of one group of prompts, named ``g{group:07d}-{tag}.parquet`` so that
sorting names sorts groups; it is written to a temporary name and renamed, so a killed run leaves
either a whole shard or none. Columns are those of the CSV export (``InterpretationSet.to_csv``),
lists kept as Parquet lists, provenance as strings, plus ``prompt_index`` and ``prompt_hash``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SHARD_DIR = "shards"
MERGED = "results.parquet"
ERRORS = "errors.jsonl"
KEY_COLUMNS = ["prompt_index", "prompt_hash"]
RESULT_FIELDS = [
    pa.field("prompt_index", pa.int64()), pa.field("prompt_hash", pa.string()),
    pa.field("prompt", pa.string()), pa.field("interpretation", pa.string()), pa.field("layer", pa.int64()),
    pa.field("token", pa.int64()), pa.field("token_decoded", pa.string()),
    pa.field("relevancy_score", pa.list_(pa.float64())), pa.field("mean_relevancy", pa.float64()),
    pa.field("token_texts", pa.list_(pa.string())), pa.field("generated_ids", pa.list_(pa.int64())),
]


def schema(provenance_keys: Iterable[str]) -> pa.Schema:
    return pa.schema(RESULT_FIELDS + [pa.field(k, pa.string()) for k in provenance_keys])


def shard_dir(out: Path) -> Path:
    return out / SHARD_DIR


def write_shard(out: Path, group: int, tag: str, rows: list[dict], provenance_keys: list[str],
                rank: int = 0) -> Path | None:
    """Write ``rows`` as one shard (atomic); None when there are no rows."""
    if not rows:
        return None
    folder = shard_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"g{group:07d}-{tag}.parquet"
    tmp = folder / f".tmp-r{rank}-{path.name}"
    table = pa.Table.from_pylist(rows, schema=schema(provenance_keys))
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def append_errors(out: Path, rank: int, errors: list[dict]) -> None:
    """Bad rows of a group, appended to this process's errors file (after its shard is written)."""
    if not errors:
        return
    folder = shard_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"errors-r{rank}.jsonl").open("a", encoding="utf-8") as f:
        for e in errors:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def shard_paths(out: Path) -> list[Path]:
    folder = shard_dir(out)
    return sorted(folder.glob("g*.parquet")) if folder.is_dir() else []


def error_records(out: Path) -> list[dict]:
    folder = shard_dir(out)
    recs: list[dict] = []
    for path in sorted(folder.glob("errors-r*.jsonl")) if folder.is_dir() else []:
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue  # a line cut short by a kill: that prompt is simply retried
            if isinstance(rec, dict) and isinstance(rec.get("prompt_index"), int) and "prompt_hash" in rec:
                recs.append(rec)
    return recs


def done_keys(out: Path) -> set[tuple[int, str]]:
    """(prompt_index, prompt_hash) of every prompt already written (rows or a reported error)."""
    done: set[tuple[int, str]] = set()
    for path in shard_paths(out):
        t = pq.read_table(path, columns=KEY_COLUMNS)
        done.update(zip(t.column(0).to_pylist(), t.column(1).to_pylist()))
    done.update((int(e["prompt_index"]), str(e["prompt_hash"])) for e in error_records(out))
    return done


def remove_partial(out: Path, rank: int) -> None:
    """Temporary files left by this process's rank in a killed run."""
    folder = shard_dir(out)
    for tmp in folder.glob(f".tmp-r{rank}-*") if folder.is_dir() else []:
        tmp.unlink(missing_ok=True)


def merge(out: Path) -> tuple[Path, int]:
    """All shards -> one Parquet file sorted by (prompt_index, layer, token), one group at a time."""
    paths = shard_paths(out)
    target = out / MERGED
    tmp = out / f".tmp-{MERGED}"
    writer: pq.ParquetWriter | None = None
    n = 0
    by_group: dict[str, list[Path]] = {}
    for p in paths:
        by_group.setdefault(p.name.split("-")[0], []).append(p)
    try:
        for group in sorted(by_group):
            table = pa.concat_tables([pq.read_table(p) for p in by_group[group]], promote_options="default")
            table = table.sort_by([("prompt_index", "ascending"), ("layer", "ascending"), ("token", "ascending")])
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table.cast(writer.schema))
            n += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        pq.write_table(pa.Table.from_pylist([], schema=schema([])), tmp)
    os.replace(tmp, target)
    errors = sorted(error_records(out), key=lambda e: int(e["prompt_index"]))
    (out / ERRORS).write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in errors), encoding="utf-8")
    return target, n
