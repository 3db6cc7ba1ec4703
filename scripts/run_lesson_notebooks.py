"""Write lessons as notebooks and execute them with nbclient (what CI runs).

    python scripts/run_lesson_notebooks.py 01_2 02_2 05_4            # --fast (the default)
    python scripts/run_lesson_notebooks.py 04_2 --full

Each lesson goes through `tinylm lesson NAME --notebook PATH --fast`'s converter, then every cell
runs in a fresh Jupyter kernel. A lesson passes when no cell raised (a failed check ends the
lesson with SystemExit(1), which nbclient reports as an error), its output ends with "all checks
passed", and its plots were shown inline. Needs jupytext, nbclient and ipykernel - test-only
tools, installed by .ci/run, not dependencies of tinylm.
"""

import argparse
import os
import sys
import tempfile
import time


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lessons", nargs="+", help="lesson ids, e.g. 05_4")
    ap.add_argument("--full", action="store_true", help="the full run instead of --fast")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    a = ap.parse_args(argv)
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from tinylm.commands.lesson import list_lessons, write_notebook

    by_id = {lid: path for lid, path, _ in list_lessons()}
    failed = []
    for lid in a.lessons:
        if lid not in by_id:
            sys.exit("no lesson %r" % lid)
        with tempfile.TemporaryDirectory() as d:
            nb_path = os.path.join(d, lid + ".ipynb")
            write_notebook(by_id[lid], nb_path, [] if a.full else ["--fast"])
            nb = nbformat.read(nb_path, as_version=4)
            t0 = time.time()
            try:
                NotebookClient(nb, timeout=a.timeout, kernel_name="python3",
                               resources={"metadata": {"path": d}}).execute()
                error = None
            except CellExecutionError as e:
                error = str(e).strip().splitlines()[-1][:200]
            outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
            text = "".join(o.get("text", "") for o in outs if o.get("name") == "stdout")
            images = sum(1 for o in outs if "image/png" in o.get("data", {}))
            ok = error is None and "all checks passed" in text and images > 0
            print("%s %s: %d cells, %d inline plots, %.0f s%s"
                  % ("PASS" if ok else "FAIL", lid, len(nb.cells), images, time.time() - t0,
                     "" if error is None else " - " + error))
            if not ok:
                failed.append(lid)
    if failed:
        sys.exit("notebooks failed: %s" % ", ".join(failed))


if __name__ == "__main__":
    main()
