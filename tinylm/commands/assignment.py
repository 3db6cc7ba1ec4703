"""`tinylm assignment`: list, make a kit, check, submit, grade.

    tinylm assignment list
    tinylm assignment make NAME --out DIR [--solutions] [--force]
    tinylm assignment check [TASK]             (inside a kit)
    tinylm assignment submit [--out ZIP]       (inside a kit)
    tinylm assignment grade SUBMISSION --out results.json [--assignment NAME]
                            [--timeout S] [--memory MB] [--seed N] [--task T ...]
                            [--unsafe-no-sandbox]
    tinylm assignment gradescope NAME --out autograder.zip [--timeout S] [--memory MB]

`grade` runs every submission in a bubblewrap sandbox and refuses to grade
without one (see docs/assignments.md).
"""

from tinylm.commands.args import checked, fail

TIMEOUT = checked(float, above=0, high=24 * 3600, hint=" (seconds)")
MEMORY = checked(int, low=256, high=2 ** 20,
                 hint=" (MB; Python and NumPy need at least 256 MB of address space)")
SEED = checked(int, low=0, high=2 ** 63 - 1)


def add_arguments(parser):
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="the assignments, their tasks and points")
    p = sub.add_parser("make", help="write a student kit (or the instructor copy)")
    p.add_argument("name", help="assignment name or number (see `list`)")
    p.add_argument("--out", required=True, help="folder to write the kit into")
    p.add_argument("--solutions", action="store_true",
                   help="keep the solutions (instructor copy; do not hand out)")
    p.add_argument("--force", action="store_true", help="write into a non-empty folder")
    p = sub.add_parser("check", help="(in a kit) run the public checks")
    p.add_argument("task", nargs="?", help="task id or number (default: all)")
    p = sub.add_parser("submit", help="(in a kit) check your files and zip them")
    p.add_argument("--out", help="zip to write (default: submission.zip in the kit)")
    p = sub.add_parser("grade", help="grade a submission (folder or zip) into results.json")
    p.add_argument("submission")
    p.add_argument("--out", required=True, help="where to write Gradescope's results.json")
    p.add_argument("--assignment", help="assignment name (default: from the submission)")
    p.add_argument("--timeout", type=TIMEOUT, default=60.0,
                   help="wall-clock seconds per task (default 60)")
    p.add_argument("--memory", type=MEMORY, default=2048,
                   help="address-space limit per task, in MB (default 2048)")
    p.add_argument("--seed", type=SEED, help="seed of the random inputs (default: random)")
    p.add_argument("--task", action="append", dest="tasks",
                   help="grade only this task (repeatable)")
    p.add_argument("--unsafe-no-sandbox", action="store_true",
                   help="grade WITHOUT the OS sandbox (only for code you trust); "
                        "printed and recorded in results.json")
    p = sub.add_parser("gradescope", help="write the Gradescope autograder zip")
    p.add_argument("name", help="assignment name or number (see `list`)")
    p.add_argument("--out", required=True, help="the zip to write (autograder.zip)")
    p.add_argument("--timeout", type=TIMEOUT, default=60.0,
                   help="wall-clock seconds per task (default 60)")
    p.add_argument("--memory", type=MEMORY, default=2048,
                   help="address-space limit per task, in MB (default 2048)")


def _list():
    from tinylm.assignments import catalogue
    for a in catalogue.ASSIGNMENTS:
        st = catalogue.status(a)
        print("assignment %d  %-10s %s  (%g points)" % (a.number, a.name, a.title, a.points))
        for t in a.tasks:
            print("  %d.%d %-22s %5g  %s%s" % (
                a.number, t.number, t.id, t.points, t.title,
                "" if st[t.id] is None else "   [not available: %s]" % st[t.id]))
            for f, q in t.regions:
                print("        %s  (%s)" % (q, f))
    return 0


def run(args):
    from tinylm.assignments import checker, grader, kit
    try:
        if args.action == "list":
            return _list()
        if args.action == "make":
            a = kit.make_kit(args.name, args.out, solutions=args.solutions, force=args.force)
            print("wrote the %s for assignment %d (%s) to %s"
                  % ("INSTRUCTOR copy (with solutions)" if args.solutions else "student kit",
                     a.number, a.name, args.out))
            return 0
        if args.action == "check":
            return 0 if checker.check(args.task) else 1
        if args.action == "submit":
            checker.submit(out=args.out)
            return 0
        if args.action == "grade":
            grader.grade(args.submission, args.out, assignment=args.assignment,
                         timeout=args.timeout, memory=args.memory * 2 ** 20, seed=args.seed,
                         tasks=args.tasks, unsafe_no_sandbox=args.unsafe_no_sandbox)
            return 0
        if args.action == "gradescope":
            from tinylm.assignments import gradescope
            a = gradescope.make_autograder(args.name, args.out, timeout=args.timeout,
                                           memory_mb=args.memory)
            print("wrote %s: the Gradescope autograder for assignment %d (%s); upload it "
                  "as the autograder zip (Ubuntu base image)" % (args.out, a.number, a.name))
            return 0
    except (KeyError, ValueError, RuntimeError, OSError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        return fail("assignment " + args.action, msg)
    return 2
