"""Runs ONE exercise on a student's code, inside the grading sandbox.

Started by :mod:`tinylm.assignments.sandbox` as::

    python -I -S -B /task/_probe.py /task EXERCISE NUMPY_PARENT FD NOBODY

inside bubblewrap (or, with --unsafe-no-sandbox, as a plain subprocess).  It

1. when it runs as root (a privileged bwrap), becomes uid/gid NOBODY first,
   which also clears the two capabilities bwrap left it (NOBODY is "-" when
   there is no sandbox: the unsafe mode changes nothing);
2. loads the grader's inputs (``/task/inputs.npz``, no pickle);
3. imports tinylm from ``/task/tree`` (the kit's tinylm with the student's
   functions spliced in) and runs the exercise;
4. writes the arrays it returned, as an .npz (no pickle), to the pipe FD.

It decides nothing and knows no path of the grader's: the grader compares
the arrays with its reference after the sandbox is gone.
"""

import os
import sys


def main():
    base, name, numpy_parent, fd, nobody = sys.argv[1:6]
    if os.getuid() == 0 and nobody.isdigit():
        os.setgroups([])
        os.setgid(int(nobody))
        os.setuid(int(nobody))
    out = os.fdopen(int(fd), "wb")
    sys.path.append(numpy_parent)      # numpy's folder (the rest of it is masked)
    sys.path.insert(0, os.path.join(base, "tree"))
    import traceback

    import numpy as np
    import numpy.lib.format  # noqa: F401  (everything np.savez needs, imported up front)
    import io
    import zipfile  # noqa: F401

    with np.load(os.path.join(base, "inputs.npz"), allow_pickle=False) as z:
        inputs = {k: z[k] for k in z.files}
    savez = np.savez
    try:
        from tinylm.assignments import exercises
        result = exercises.run(name, inputs)
        if not isinstance(result, dict):
            raise TypeError("the exercise returned %s, not a dict" % type(result).__name__)
        arrays = {}
        for k, v in result.items():
            a = np.asarray(v)
            if a.dtype.kind not in "biufc" and not (a.dtype.kind == "U" and
                                                    str(k).endswith(".error")):
                raise TypeError("%s is %s, not an array of numbers" % (k, type(v).__name__))
            arrays[str(k)] = a
        buf = io.BytesIO()
        savez(buf, **arrays)
    except BaseException:
        traceback.print_exc(limit=8)
        sys.stderr.flush()
        os._exit(1)
    out.write(buf.getvalue())
    out.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
