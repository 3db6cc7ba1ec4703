"""`tinylm lesson`: list the lessons, run one (`tinylm lesson 04_2 --fast`), or write it as a
Jupyter notebook (`tinylm lesson 04_2 --notebook [PATH] [--fast]`)."""

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
                        help="options for the lesson: --fast, --step, --out DIR, --seed N; "
                             "--notebook [PATH] writes the lesson as an .ipynb (needs jupytext) "
                             "instead of running it, with the other options built in")


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
    lesson_args = list(args.lesson_args)
    if "--notebook" in lesson_args:
        i = lesson_args.index("--notebook")
        out = None
        if i + 1 < len(lesson_args) and not lesson_args[i + 1].startswith("--"):
            out = lesson_args.pop(i + 1)
        lesson_args.pop(i)
        out = out or os.path.basename(matches[0])[:-3] + ".ipynb"
        write_notebook(matches[0], out, lesson_args)
        print("wrote %s (open it in Jupyter; options: %s)" % (out, " ".join(lesson_args)
                                                               or "none - the full run"))
        return 0
    sys.argv = [matches[0]] + lesson_args
    try:
        runpy.run_path(matches[0], run_name="__main__")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return 0


def write_notebook(path, out, lesson_args=()):
    """Write the lesson script ``path`` (``# %%`` cells) as the notebook ``out`` (.ipynb).

    jupytext turns the cells into notebook cells; the module docstring becomes a Markdown
    cell, and a first code cell sets the lesson's name and options (TINYLM_LESSON_ARGS, e.g.
    --fast) for tinylm.teaching.lesson.Lesson, which reads them inside Jupyter.
    """
    try:
        import jupytext
        from nbformat.v4 import new_code_cell, new_markdown_cell
    except ImportError:
        raise SystemExit("tinylm lesson --notebook needs jupytext: pip install jupytext") from None
    for a in lesson_args:
        if a == "--step":
            raise SystemExit("tinylm lesson --notebook: --step has no meaning in a notebook "
                             "(run the cells one by one instead)")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    doc = ast.get_docstring(ast.parse(text)) or ""
    nb = jupytext.reads(text, fmt="py:percent")
    cells = list(nb.cells)
    if cells and cells[0].cell_type == "code" and doc and cells[0].source.lstrip().startswith('"""'):
        cells.pop(0)                                  # the docstring cell, shown as Markdown
    name = os.path.basename(path)[:-3]
    setup = ("# Options for this lesson (what `python %s.py %s` would get on the command line)\n"
             "import os\n"
             "os.environ[\"TINYLM_LESSON_NAME\"] = %r\n"
             "os.environ[\"TINYLM_LESSON_ARGS\"] = %r\n"
             "__doc__ = %r"
             % (name, " ".join(lesson_args), name, " ".join(lesson_args), doc))
    nb.cells = ([new_markdown_cell(doc)] if doc else []) + \
        [new_code_cell(setup)] + cells
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata.pop("jupytext", None)
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise SystemExit("tinylm lesson --notebook: folder %s does not exist" % folder)
    jupytext.write(nb, out, fmt="ipynb")
    return out
