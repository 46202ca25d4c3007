"""``python -m explorer geometry``: per-prompt geometric features (SplineLLM's 7 statistics per
layer; ``--features extended`` adds the attention intrinsic dimension, 9 per layer) as CSV.

Prompts come from ``--prompt TEXT`` or ``--prompts FILE`` (a .txt file with prompts separated by blank
lines, or a .csv file with a ``text`` column and optionally ``label``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from explorer.core.errors import InputError
from explorer.core.files import not_text, read_text, readable_file, shorten
from explorer.tools.paths import writable_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--prompts", help="a .txt file (prompts separated by blank lines) or a .csv file with a "
                     "'text' column (and optionally 'label')")
    p.add_argument("--out", required=True, help="where to write the features: FILE.csv or FILE.json")
    p.add_argument("--model", default="default", help="'default' (embedded), hub id, local folder or .gguf file")
    p.add_argument("--max-tokens", type=int, default=256, help="keep at most this many tokens of each prompt")
    p.add_argument("--features", choices=["paper", "extended"], default="paper",
                   help="paper: the 7 statistics per layer of SplineLLM (default); extended: plus the last token's "
                        "attention intrinsic dimension and its mean over tokens (9 per layer)")


def read_prompts(path: str) -> tuple[list[str], list[str] | None]:
    """Prompts (and labels, from a CSV that has them) from a file."""
    if Path(path).suffix.lower() == ".csv":
        import pandas as pd

        file = readable_file(path, "prompts file")
        try:
            frame = pd.read_csv(file, dtype=str, keep_default_na=False, encoding="utf-8")
        except UnicodeDecodeError as e:
            raise not_text(path, "prompts file", e) from None
        except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
            raise InputError(f"'{shorten(file.name)}' is not a readable CSV file.") from None
        if "text" not in frame.columns:
            raise InputError(f"'{shorten(file.name)}' has no 'text' column.")
        labels = frame["label"].tolist() if "label" in frame.columns else None
        return frame["text"].tolist(), labels
    blocks = [b.strip("\n") for b in read_text(path, "prompts file").split("\n\n")]
    return [b for b in blocks if b.strip()], None


def run(args: argparse.Namespace) -> int:
    from explorer.core.models import load_model
    from explorer.methods.geometry.prompt_features import prompt_features

    if not args.out.lower().endswith((".csv", ".json")):
        raise InputError(f"--out must end in .csv or .json; got '{shorten(args.out)}'.")
    if args.max_tokens < 1:
        raise InputError("--max-tokens must be at least 1.")
    writable_file(args.out)  # before minutes of work, not after them
    texts, labels = ([args.prompt], None) if args.prompt is not None else read_prompts(args.prompts)
    if not texts:
        raise InputError("The prompts file holds no prompts: there is nothing to measure.")
    lm = load_model(args.model)

    def progress(done: int, total: int, left: float) -> None:
        print(f"\r{done}/{total} prompts, about {left:.0f} s left", end="", file=sys.stderr, flush=True)

    feats = prompt_features(lm, texts, labels=labels, max_tokens=args.max_tokens, progress=progress,
                            features=args.features)
    print(file=sys.stderr)
    frame = feats.to_frame()
    if args.out.lower().endswith(".json"):
        frame.to_json(args.out, orient="records", indent=1)
    else:
        frame.to_csv(args.out, index=False)
    print(f"wrote {len(frame)} prompts x {len(frame.columns) - 1 - (labels is not None)} features to {args.out}",
          file=sys.stderr)
    return 0
