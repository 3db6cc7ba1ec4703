"""`tinylm gradcheck`: gradient-check built-in layers and print the report tables.

    tinylm gradcheck lstm            one layer
    tinylm gradcheck lstm mha        several
    tinylm gradcheck all             every layer in the registry
    tinylm gradcheck --list          the registry's names and what each checks

Exit code 0 when every check passes, 1 when one fails, 2 for an unknown name.
The configurations live in ``tinylm.layers.examples`` (shared with the tests).
"""

import sys


def add_arguments(parser):
    from tinylm.commands.args import checked
    parser.add_argument("layers", nargs="*", metavar="LAYER",
                        help="layer names (see --list), or 'all'")
    parser.add_argument("--list", action="store_true", help="list the layer names and exit")
    parser.add_argument("--seed", type=checked(int, low=0, high=2 ** 63 - 1), default=0, help="seed for inputs, weights, upstream "
                        "gradient and sampled entries (default 0)")
    parser.add_argument("--max-entries", type=checked(int, low=1), default=None,
                        help="entries checked per tensor (default: the example's own, 50)")
    parser.add_argument("--quiet", action="store_true",
                        help="one line per layer instead of the full table")


def run(args):
    from tinylm.gradcheck import check_example
    from tinylm.layers.examples import EXAMPLES, make_example

    if args.list:
        width = max(map(len, EXAMPLES))
        for name in EXAMPLES:
            print("%-*s  %s" % (width, name, make_example(name).description))
        return 0
    names = list(args.layers)
    if not names:
        from tinylm.commands.args import fail
        return fail("gradcheck", "name one or more layers, 'all', or --list")
    if "all" in names:
        names = list(EXAMPLES)
    unknown = [n for n in names if n not in EXAMPLES]
    if unknown:
        from tinylm.commands.args import fail
        return fail("gradcheck", "unknown layer(s) %s; choose from: %s"
                    % (", ".join(unknown), ", ".join(EXAMPLES)))
    opts = {} if args.max_entries is None else {"max_entries": args.max_entries}
    failed = []
    for name in names:
        report = check_example(name, seed=args.seed, **opts)
        if args.quiet:
            print("%-20s %s  max rel err %.2e" % (name, "PASS" if report.ok else "FAIL",
                                                 report.max_error))
        else:
            print(report)
            print()
        if not report.ok:
            failed.append(name)
    if len(names) > 1:
        print("%d of %d layers pass%s" % (len(names) - len(failed), len(names),
                                          "; FAILED: " + ", ".join(failed) if failed else ""))
    return 1 if failed else 0
