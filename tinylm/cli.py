"""The `tinylm` command line.

Each sub-command lives in its own module under ``tinylm/commands/`` and
defines ``add_arguments(parser)`` and ``run(args) -> int``.  Modules are
imported only when their command runs, so ``tinylm --help`` stays fast.
To add a command, add one line to COMMANDS.
"""

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "info": ("tinylm.commands.info", "version, backend, SIMD, OpenMP, threads, NumPy's BLAS"),
    "gradcheck": ("tinylm.commands.gradcheck", "gradient-check built-in layers: tinylm gradcheck lstm | all | --list"),
    "train": ("tinylm.commands.train", "train a language model (default: a small GPT on Python's docs, ~5 min)"),
    "generate": ("tinylm.commands.generate", "continue a prompt with a trained checkpoint"),
    "complete": ("tinylm.commands.complete", "complete a prompt like the old OpenAI Completions call: --max-tokens, --n, --stop"),
    "eval": ("tinylm.commands.eval", "validation loss and perplexity of a trained checkpoint"),
    "lesson": ("tinylm.commands.lesson", "list the lessons, or run one: tinylm lesson 04_2 --fast"),
    "assignment": ("tinylm.commands.assignment", "assignments: list, make a kit, check, submit, grade"),
    "embed": ("tinylm.commands.embed", "sentence embeddings with a pretrained BERT (all-MiniLM-L6-v2)"),
    "search": ("tinylm.commands.search", "semantic search: rank a corpus's paragraphs by meaning"),
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (then exit 2), not the whole usage text."""

    def error(self, message):
        self.exit(2, "%s: error: %s (see %s --help)\n" % (self.prog, message, self.prog))


def build_parser():
    parser = _Parser(
        prog="tinylm",
        description="tinylm: language models from scratch (NumPy layers, C kernels).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (modname, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=modname)
        # Arguments are added lazily (see main) so --help on the top level
        # does not import every command.
    return parser, sub


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, sub = build_parser()
    # Find the command first, then let its module add its own arguments.
    name = next((a for a in argv if not a.startswith("-")), None)
    if name in COMMANDS:
        module = importlib.import_module(COMMANDS[name][0])
        module.add_arguments(sub.choices[name])
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    module = importlib.import_module(args._module)
    try:
        return int(module.run(args) or 0)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `tinylm generate ... | head`: the reader went away; exit quietly.
        import os
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
