"""Dataset-scale interpretation: prompts from a file, relative cell specs, Parquet shards, resume,
and data-parallel runs under ``torchrun`` / ``accelerate launch`` (see docs/scale.md)."""

from explorer.methods.batch.cellspec import CellSpec, parse_cell_spec
from explorer.methods.batch.inputs import PromptRow, count_rows, read_prompts
from explorer.methods.batch.runner import BatchConfig, BatchSummary, run_batch

__all__ = ["BatchConfig", "BatchSummary", "CellSpec", "PromptRow", "count_rows", "parse_cell_spec",
           "read_prompts", "run_batch"]
