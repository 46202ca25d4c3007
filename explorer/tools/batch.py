"""``python -m explorer batch``: SelfIE readings for every prompt of a file, into Parquet.

Under ``torchrun`` or ``accelerate launch`` each process takes its share of the prompts (accelerate's
``PartialState``: gloo on CPUs, NCCL on GPUs) and process 0 merges the shards. The last line printed
gives prompts/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from explorer.core.errors import InputError
from explorer.core.files import shorten
from explorer.tools.paths import writable_dir

CELLS_HELP = ("cells relative to each prompt: LAYER:TOKEN where each side is a number, -N (from the end), "
              "last, * or A..B/STEP; also row:L, col:T, last (= *:last), all; comma separated")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", required=True, help="a .txt (one prompt per line), .csv, .jsonl or .parquet file")
    p.add_argument("--cells", required=True, help=CELLS_HELP)
    p.add_argument("--out", required=True, help="output folder (shards/, results.parquet, errors.jsonl, run.json)")
    p.add_argument("--column", default=None, help="the prompt column of a table (default: prompt, else text)")
    p.add_argument("--model", default="default", help="'default' (embedded), hub id, local folder or .gguf file")
    p.add_argument("--chat", action="store_true", help="wrap each prompt in the model's chat template")
    p.add_argument("--template", default=None, help="preset name or custom text with {X}, as for interpret")
    p.add_argument("--placeholders", type=int, default=5, help="number of placeholder tokens K")
    p.add_argument("--k", type=int, default=1, help="injection layer")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--batch-size", default="auto", help="cells per generate call ('auto' as for interpret)")
    p.add_argument("--group-size", type=int, default=16, help="prompts per group (one shard each; resume unit)")
    p.add_argument("--no-relevancy", action="store_true", help="skip the relevancy pass")
    p.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on a GPU, fp32 on CPU)")
    p.add_argument("--device-map", default=None, help="shard one model over devices: 'auto' or a JSON module->device map")
    p.add_argument("--offload-folder", default=None, help="folder for weights offloaded to disk by --device-map")


def _distributed():
    """(rank, world, barrier, sum_counts, device) from torchrun / accelerate launch, or one process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, None, None, None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())

    def sum_counts(counts: list[int]) -> list[int]:
        t = torch.tensor(counts, dtype=torch.long, device=state.device if state.backend == "nccl" else "cpu")
        torch.distributed.all_reduce(t)
        return [int(x) for x in t.tolist()]

    device = str(state.device) if state.device.type == "cuda" else None
    return state.process_index, state.num_processes, state.wait_for_everyone, sum_counts, device


def _device_map(text: str | None):
    if text is None or text in ("auto", "balanced", "balanced_low_0", "sequential"):
        return text
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        raise InputError("--device-map must be auto, balanced, sequential or a JSON object of module -> device.") from None
    if not isinstance(value, dict):
        raise InputError("--device-map must be auto, balanced, sequential or a JSON object of module -> device.")
    return value


def run(args: argparse.Namespace) -> int:
    from explorer.api import Explorer
    from explorer.methods.batch.cellspec import parse_cell_spec
    from explorer.methods.batch.inputs import require_prompts
    from explorer.methods.batch.runner import BatchConfig, nothing_done, run_batch, summary_line

    # Everything that can be checked without the model fails before it loads: the prompts file (read
    # once through), the cell spec and the output folder.
    require_prompts(args.prompts, args.column)
    parse_cell_spec(args.cells)
    writable_dir(args.out, "--out")
    batch: int | str = args.batch_size
    if batch != "auto":
        try:
            batch = int(batch)
        except ValueError:
            raise InputError(f"--batch-size must be a whole number or 'auto'; got {shorten(repr(batch))}.") from None
    rank, world, barrier, sum_counts, device = _distributed()
    ex = Explorer.load(args.model, device=device, dtype=args.dtype, device_map=_device_map(args.device_map),
                       offload_folder=args.offload_folder)
    cfg = BatchConfig(prompts=args.prompts, cells=args.cells, out=args.out, column=args.column, chat=args.chat,
                      template=args.template, n_placeholders=args.placeholders, k=args.k,
                      max_new_tokens=args.max_new_tokens, strength=args.strength, relevancy=not args.no_relevancy,
                      batch_size=batch, group_size=args.group_size)
    summary = run_batch(ex, cfg, rank=rank, world=world, barrier=barrier, total_counts=sum_counts)
    if rank == 0:
        print(summary_line(summary, world), flush=True)
        problem = nothing_done(summary, args.out)
        if problem:
            raise InputError(problem)
    sys.stderr.flush()
    return 0
