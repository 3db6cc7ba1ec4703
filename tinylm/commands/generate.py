"""`tinylm generate CHECKPOINT`: continue a prompt with a trained model."""

import argparse
import sys


def add_arguments(parser):
    from tinylm.commands.args import checked
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = """examples:
  tinylm generate runs/gpt/best.npz --prompt 'The list ' --max-length 200
  tinylm generate runs/gpt/best.npz --prompt 'def ' --greedy
  tinylm generate runs/gpt/best.npz --prompt 'A' --num-return-sequences 3 --top-p 0.9 --seed 1
  tinylm generate runs/gpt/best.npz --prompt 'The ' --num-beams 5 --no-repeat-ngram-size 3
"""
    parser.add_argument("checkpoint", help="a checkpoint written by `tinylm train` (.npz)")
    parser.add_argument("--prompt", default=None,
                        help="text to continue (default: a common first character)")
    parser.add_argument("--max-length", type=checked(int, low=1, high=10 ** 6), default=200,
                        help="total length in tokens, prompt included (as Hugging Face)")
    parser.add_argument("--num-return-sequences", type=checked(int, low=1, high=1000), default=1)
    parser.add_argument("--temperature", default=0.8,
                        type=checked(float, " (for the most likely token every time, use "
                                            "--greedy)", above=0),
                        help="sampling temperature > 0 (lower: safer, higher: wilder)")
    parser.add_argument("--top-k", type=checked(int, low=1), default=None,
                        help="sample only from the k most likely tokens")
    parser.add_argument("--top-p", type=checked(float, above=0, high=1), default=None,
                        help="nucleus sampling: the smallest set with this probability")
    parser.add_argument("--greedy", action="store_true",
                        help="always take the most likely token (no sampling)")
    parser.add_argument("--num-beams", type=checked(int, low=1, high=1000), default=1,
                        help="beam search with this many beams (deterministic; > 1 "
                             "turns sampling off)")
    parser.add_argument("--length-penalty", type=checked(float), default=1.0,
                        help="beam search: score = log-prob / length ** this "
                             "(> 0 favours longer endings; needs an end token)")
    parser.add_argument("--early-stopping", choices=["true", "false", "never"],
                        default="false",
                        help="beam search: stop once num_beams sequences have ended "
                             "(true), by a heuristic (false), or only when no beam can "
                             "improve (never)")
    parser.add_argument("--no-repeat-ngram-size", type=checked(int, low=0, high=10 ** 6),
                        default=0,
                        help="never repeat an n-gram of this size (0: off)")
    parser.add_argument("--seed", type=checked(int, low=0, high=2 ** 63 - 1), default=None,
                        help="random seed for sampling (reproducible output)")
    parser.add_argument("--no-cache", action="store_true",
                        help="recompute the whole context each step (slower; for checking)")


def run(args):
    from tinylm.commands.args import fail
    from tinylm.generate import default_prompt, generate
    from tinylm.training import load_trained
    try:
        model, tok, meta, _ = load_trained(args.checkpoint)
    except (OSError, ValueError, KeyError) as exc:
        return fail("generate", exc)
    prompt = args.prompt
    if prompt is None:
        prompt = default_prompt(tok)
    try:
        early = {"true": True, "false": False, "never": "never"}[args.early_stopping]
        texts = generate(model, tok, prompt, max_length=args.max_length,
                         num_return_sequences=args.num_return_sequences,
                         do_sample=not args.greedy and args.num_beams == 1,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         num_beams=args.num_beams, length_penalty=args.length_penalty,
                         early_stopping=early,
                         no_repeat_ngram_size=args.no_repeat_ngram_size, seed=args.seed,
                         use_cache=not args.no_cache)
    except ValueError as exc:
        return fail("generate", exc)
    for i, t in enumerate(texts):
        if len(texts) > 1:
            print("=== sequence %d ===" % (i + 1))
        print(t)
    return 0
