"""``python -m explorer control``: Supervised / Reinforcement Control and steering from the shell."""

from __future__ import annotations

import argparse
import json

from explorer.core.errors import InputError
from explorer.core.files import readable_file, shorten
from explorer.core.models import load_model
from explorer.methods.control import (
    DEFAULT_TEST_PROMPTS,
    Edit,
    Judge,
    TrainSettings,
    compare_answers,
    concept_state,
    reinforcement_control,
    steer,
    steering_vector,
    supervised_control,
)
from explorer.tools.paths import writable_file


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("mode", choices=["supervised", "reinforcement", "steer", "apply"],
                   help="supervised: edit toward a target concept; reinforcement: suppress a concept; "
                        "steer: add a concept direction; apply: load a saved edit and compare answers")
    p.add_argument("--model", default="default")
    p.add_argument("--prompt", default="The Eiffel Tower is in the city of")
    p.add_argument("--layer", type=int, default=10, help="grid row L (edits block L-1's MLP)")
    p.add_argument("--tokens", default="-1", help="source token positions, comma separated (-1 = last)")
    p.add_argument("--target", help="target concept phrase (supervised)")
    p.add_argument("--target-layer", type=int, help="layer of the target phrase's state (default: --layer)")
    p.add_argument("--concept", help="concept to suppress (reinforcement)")
    p.add_argument("--keywords", default="", help="comma separated words that count as mentioning the concept")
    p.add_argument("--judge", choices=["keywords", "model"], default="keywords")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--beta", type=float, default=10.0)
    p.add_argument("--concept-a", help="steering: towards this")
    p.add_argument("--concept-b", default="", help="steering: away from this")
    p.add_argument("--alpha", type=float, default=0.5, help="steering strength in typical state norms")
    p.add_argument("--test-prompt", action="append", help="prompts answered before/after (repeatable)")
    p.add_argument("--save", help="save the edit to FILE.safetensors")
    p.add_argument("--load", help="an edit file (mode apply)")


def run(args: argparse.Namespace) -> int:
    writable_file(args.save, "--save")
    if args.mode == "apply" and args.load:
        readable_file(args.load, "edit file")  # before the model loads
    lm = load_model(args.model)
    tests = args.test_prompt or DEFAULT_TEST_PROMPTS
    if args.mode == "steer":
        if not args.concept_a:
            raise InputError("--concept-a is required for steering.")
        vec = steering_vector(lm, args.concept_a, args.concept_b, args.layer)
        print(json.dumps(steer(lm, args.prompt, vec, args.layer, args.alpha), ensure_ascii=False, indent=1))
        return 0
    if args.mode == "apply":
        if not args.load:
            raise InputError("--load FILE is required for apply.")
        edit = Edit.load(args.load, lm)
    elif args.mode == "supervised":
        if not args.target or not args.target.strip():
            raise InputError("--target is required: the concept the state should express.")
        n = len(lm.tokenizer.encode(args.prompt))
        try:
            tokens = [int(t) % n if int(t) < 0 else int(t) for t in args.tokens.split(",")]
        except ValueError as e:
            raise InputError(f"--tokens must be whole numbers; got {shorten(repr(args.tokens))}.") from e
        target = concept_state(lm, args.target, args.target_layer or args.layer)
        res = supervised_control(lm, args.prompt, args.layer, tokens, target,
                                 TrainSettings(args.steps, args.lr, args.beta), target_desc=args.target,
                                 on_step=lambda s, loss, d: print(f"step {s:>3}  loss {loss:10.3f}  distance {d:8.2f}"))
        print(f"distance to target {res.distances[0]:.1f} -> {res.distances[-1]:.1f} ({100 * res.reduction:.0f}% lower)")
        edit = res.edit
    else:
        if not args.concept:
            raise InputError("--concept is required for reinforcement control.")
        judge = Judge(args.concept, args.keywords.split(","), mode=args.judge)
        res = reinforcement_control(lm, args.prompt, args.layer, judge, TrainSettings(args.steps, args.lr, 0.0),
                                    on_step=lambda s, r, _t: print(f"step {s:>3}  mean reward {r:+.2f}"))
        print(f"mentioning {args.concept!r}: {res.share_before:.2f} -> {res.share_after:.2f}; "
              f"retention {res.retention_before:.2f} -> {res.retention_after:.2f}")
        edit = res.edit
    for row in compare_answers(lm, edit, tests):
        print(f"\n> {row['prompt']}\n  before: {row['before']}\n  after:  {row['after']}")
    if args.save:
        print(f"saved {edit.save(args.save)} ({edit.edit_id})")
    return 0
