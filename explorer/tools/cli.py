"""Command-line interface: ``python -m explorer COMMAND ...``.

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
this file only wires them up and turns user errors into one line and a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from explorer.core.errors import ExplorerError
from explorer.core.files import shorten
from explorer.tools.paths import writable_file

# name -> (module, help); modules are imported only when their command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "interpret": ("explorer.tools.cli", "interpret cells of a prompt's layer x token grid with SelfIE"),
    "bench": ("explorer.tools.bench", "measure interpretation speed against plain generation"),
    "gridjob": ("explorer.tools.gridjob", "a whole-grid job in the app's path vs the engine's best batch"),
    "evaluate": ("explorer.tools.evaluate", "token-identity and attribute-extraction evaluations by layer"),
    "control": ("explorer.tools.control_cmd", "supervised / reinforcement control and steering from the shell"),
    "control-eval": ("explorer.tools.control_eval", "evaluate supervised and reinforcement control edits"),
    "crossmodel": ("explorer.tools.crossmodel_cmd", "fit affine maps between layers or models and print their held-out R²"),
    "geometry": ("explorer.tools.geometry_cmd", "per-prompt geometric features (MLP regions, attention dimension) as CSV"),
    "geometry-eval": ("explorer.tools.geometry_eval", "geometric vs state probe AUC, geometry cost, intrinsic dimension"),
    "concept": ("explorer.tools.concept_cmd", "train a concept from examples, colour a grid by it, steer with GCAV"),
    "concept-eval": ("explorer.tools.concept_eval", "probe accuracy per concept set and GCAV vs fixed steering"),
    "trace": ("explorer.tools.trace_cmd", "causal tracing: which states of the grid the answer depends on (ROME)"),
    "trace-eval": ("explorer.tools.trace_eval", "mean causal effect by region over the shipped facts the model knows"),
    "loadtest": ("explorer.tools.loadtest", "many concurrent clients against a local app"),
    "page-time": ("explorer.tools.page_time", "time the page in Chromium at 1366x768: grid drawn, colour switch, Run"),
    "batch": ("explorer.tools.batch", "interpret cells of every prompt in a file into Parquet (resumable, data-parallel)"),
    "gallery": ("explorer.tools.gallery_cmd", "build the gallery of worked examples by running the model, or list it"),
    "serve": ("explorer.tools.cli", "launch the web app"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``interpret``."""
    p.add_argument("--prompt", required=True, help="the text to explore")
    cells = p.add_mutually_exclusive_group(required=True)
    cells.add_argument("--cells", help="LAYER:TOKEN pairs, comma separated (e.g. 15:7,20:7), or row:L / col:T")
    cells.add_argument("--all", action="store_true", help="every cell of the grid")
    p.add_argument("--model", default="default", help="'default' (embedded), hub id, local folder or .gguf file")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--template", default=None, help="preset name (refers_to, summarize, mentions, base) or "
                   "custom text with {X} (lead-in after '|')")
    p.add_argument("--placeholders", type=int, default=5, help="number of placeholder tokens K")
    p.add_argument("--k", type=int, default=1, help="injection layer: the block whose input receives the state")
    p.add_argument("--max-new-tokens", type=int, default=20)
    p.add_argument("--strength", type=float, default=1.0)
    p.add_argument("--batch-size", default="auto", help="cells per generate call; 'auto': 16 on a CPU, "
                   "the largest that fits on a GPU")
    p.add_argument("--no-relevancy", action="store_true", help="skip the relevancy pass (faster)")
    p.add_argument("--out", help="write results to FILE.csv or FILE.json")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from explorer.api import Explorer

    if args.out and not args.out.lower().endswith((".csv", ".json")):
        raise ExplorerError(f"--out must end in .csv or .json; got '{shorten(args.out)}'.")
    writable_file(args.out)
    ex = Explorer.load(args.model)
    grid = ex.run(args.prompt, chat=args.chat)
    settings = ex.settings(args.template, n_placeholders=args.placeholders, k=args.k,
                           max_new_tokens=args.max_new_tokens, strength=args.strength)
    cells = "all" if args.all else args.cells
    with tqdm(total=0, desc="interpreting", unit="cell", file=sys.stderr, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        batch = args.batch_size if args.batch_size == "auto" else _int_arg("--batch-size", args.batch_size)
        res = ex.interpret(grid, cells, settings=settings, batch_size=batch,
                           relevancy=not args.no_relevancy, progress=progress)
    for rec in res.records():
        score = "" if rec["mean_relevancy"] is None else f"{rec['mean_relevancy']:.3f}"
        print(f"{rec['layer']:>3}:{rec['token']:<4} {rec['token_decoded']!r:>14}  {score:>6}  {rec['interpretation']}")
    if args.out:
        if args.out.lower().endswith(".json"):
            res.to_json(args.out)
        else:
            res.to_csv(args.out)
        print(f"wrote {len(res.cells)} results to {args.out}", file=sys.stderr)
    return 0


def _int_arg(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError as e:
        raise ExplorerError(f"{name} must be a whole number or 'auto'; got {shorten(repr(value))}.") from e


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None)
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))


def _serve(args: argparse.Namespace) -> int:
    from explorer.ui.app import launch

    launch(model=args.model, host=args.host, port=args.port)
    return 0


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; only the command named in ``argv`` gets its full arguments (its module is imported then),
    so ``--help`` and every other command's start stay fast and never import torch needlessly."""
    parser = argparse.ArgumentParser(prog="python -m explorer", description="SelfIE Explorer")
    sub = parser.add_subparsers(dest="command", required=True)
    words = sys.argv[1:] if argv is None else argv
    chosen = next((w for w in words if not w.startswith("-")), None)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name != chosen:
            continue  # listed for --help; its arguments are added only when it is the command run
        if name == "interpret":
            add_arguments(p)
            p.set_defaults(_run=run)
        elif name == "serve":
            _serve_arguments(p)
            p.set_defaults(_run=_serve)
        else:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    warnings.filterwarnings("ignore", category=UserWarning)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except ExplorerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file named on the command line could not be read or written
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"error: {e.strerror or 'the file could not be used'}{where}.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
