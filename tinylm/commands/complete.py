"""`tinylm complete CHECKPOINT`: an OpenAI-Completions-shaped call (seed 003 section 5) on a
tinylm checkpoint."""

import argparse
import json
import sys

from tinylm.commands.args import checked, fail


def add_arguments(parser):
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = """examples:
  tinylm complete runs/gpt/best.npz --prompt 'The list ' --max-tokens 40
  tinylm complete runs/gpt/best.npz --prompt 'def ' --n 3 --temperature 0.7 --stop '\\n' --seed 1
  tinylm complete runs/gpt/best.npz --prompt 'Return ' --temperature 0 --json

Seed 003's openai.Completion.create(engine=..., prompt=..., max_tokens=...) no longer runs
(removed from the openai package in 1.0; text-davinci-003 retired); this does the same steps
with a tinylm model.  Each choice is printed without the prompt, cut before the first stop
string; --json prints the whole response (choices, finish_reason, usage).
"""
    parser.add_argument("checkpoint", help="a checkpoint written by `tinylm train` (.npz)")
    parser.add_argument("--prompt", required=True, help="the text to complete")
    parser.add_argument("--max-tokens", type=checked(int, low=1, high=10 ** 6), default=16,
                        help="new tokens per completion (default 16, as the old API)")
    parser.add_argument("--temperature", type=checked(float, low=0), default=1.0,
                        help="sampling temperature >= 0; 0 = greedy (default 1.0)")
    parser.add_argument("--top-p", type=checked(float, above=0, high=1), default=1.0,
                        help="nucleus sampling: the smallest set with this probability")
    parser.add_argument("--n", type=checked(int, low=1, high=1000), default=1,
                        help="number of completions")
    parser.add_argument("--stop", action="append", default=None,
                        help="stop string (repeatable); '\\n' and '\\t' are read as escapes")
    parser.add_argument("--seed", type=checked(int, low=0, high=2 ** 63 - 1), default=None, help="random seed (reproducible)")
    parser.add_argument("--json", action="store_true", help="print the response as JSON")


def _unescape(s):
    return s.replace("\\n", "\n").replace("\\t", "\t")


def run(args):
    from dataclasses import asdict

    from tinylm.checkpoint import CheckpointError
    from tinylm.complete import complete
    stop = None if args.stop is None else [_unescape(s) for s in args.stop]
    try:
        r = complete(args.checkpoint, args.prompt, max_tokens=args.max_tokens,
                     temperature=args.temperature, n=args.n, stop=stop, top_p=args.top_p,
                     seed=args.seed)
    except (OSError, ValueError, KeyError, TypeError, CheckpointError) as exc:
        return fail("complete", exc)
    if args.json:
        print(json.dumps(asdict(r), ensure_ascii=False, indent=2))
        return 0
    for c in r.choices:
        if len(r.choices) > 1:
            print("=== choice %d (finish_reason: %s) ===" % (c.index, c.finish_reason))
        print(c.text)
    if len(r.choices) == 1:
        print("(finish_reason: %s)" % r.choices[0].finish_reason, file=sys.stderr)
    return 0
