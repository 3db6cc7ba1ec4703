"""`tinylm lesson`: list the lessons, or run one (`tinylm lesson 04_2 --fast`)."""

import ast
import glob
import os
import runpy
import sys


def lessons_dir():
    """The lessons folder: installed with the package, or the checkout's lessons/."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for cand in (os.path.join(here, "lessons"),                      # installed: tinylm/lessons
                 os.path.join(os.path.dirname(here), "lessons")):    # checkout: ./lessons
        if glob.glob(os.path.join(cand, "[0-9][0-9]_*.py")):
            return cand
    raise SystemExit("tinylm lesson: no lessons found (looked next to the tinylm package)")


def list_lessons():
    """[(id like '04_2', path, first docstring line)] in curriculum order."""
    out = []
    for path in sorted(glob.glob(os.path.join(lessons_dir(), "[0-9][0-9]_*.py"))):
        base = os.path.basename(path)[:-3]
        with open(path, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
        out.append(("_".join(base.split("_")[:2]), path, doc.strip().splitlines()[0] if doc else ""))
    return out


def add_arguments(parser):
    parser.add_argument("lesson", nargs="?",
                        help="lesson id (e.g. 04_2) or file name; omit to list them")
    parser.add_argument("lesson_args", nargs="...",
                        help="options for the lesson: --fast, --step, --out DIR, --seed N")


def run(args):
    lessons = list_lessons()
    if not args.lesson:
        print("Lessons (run one with: tinylm lesson ID [--fast] [--step] [--out DIR]):\n")
        for lid, path, title in lessons:
            print("  %-6s %-32s %s" % (lid, os.path.basename(path)[:-3], title))
        return 0
    matches = [p for lid, p, _ in lessons
               if args.lesson in (lid, os.path.basename(p), os.path.basename(p)[:-3])]
    if len(matches) != 1:
        print("tinylm lesson: no lesson %r; `tinylm lesson` lists them" % args.lesson,
              file=sys.stderr)
        return 2
    sys.argv = [matches[0]] + list(args.lesson_args)
    try:
        runpy.run_path(matches[0], run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0
