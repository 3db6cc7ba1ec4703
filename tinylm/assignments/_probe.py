"""Runs ONE exercise on a student's code, inside the grading sandbox.

This file is copied next to the per-task source tree and started by
``tinylm.assignments.sandbox`` as ``python -I -B _probe.py config.json`` in a
fresh temporary directory, with resource limits already set.  It

1. loads the grader's inputs (``inputs.npz``, no pickle),
2. installs an audit hook (PEP 578) that refuses, for the rest of the
   process: reading files under the reference source (the grader's tinylm
   and its checkout), writing or deleting anything outside the temporary
   directory, starting processes, loading native libraries through ctypes,
   sending signals and opening network connections,
3. imports tinylm from the per-task tree and runs the exercise,
4. writes the arrays it returned to ``outputs.npz`` (no pickle).

It decides nothing: the grader, in its own process, compares the outputs
with its reference.  The audit hook is defence in depth against casual
cheating; the hard limits (time, memory, processes, file size) are set by the
parent, and the real boundary for hostile code is the container the grader
runs in (see docs/assignments.md).
"""

import json
import os
import sys
import traceback

import numpy as np
import numpy.lib.format  # noqa: F401  (everything np.savez needs, imported up front)
import zipfile  # noqa: F401


def _install_hook(sandbox, deny):
    realpath, sep = os.path.realpath, os.sep
    sandbox = realpath(sandbox)
    deny = [realpath(d) for d in deny]
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

    def inside(path, root):
        return path == root or path.startswith(root.rstrip(sep) + sep)

    own_proc = "/proc/%d" % os.getpid()

    def check_path(event, path, writing):
        if isinstance(path, int) or path is None:
            return
        try:
            p = realpath(os.fsdecode(path))
        except Exception:
            raise PermissionError("grading sandbox: %s on a path it cannot resolve" % event)
        parts = p.split(sep)
        if len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and \
                not inside(p, own_proc):
            raise PermissionError("grading sandbox: %s(%r) is not allowed: other processes "
                                  "(the grader) are off limits" % (event, path))
        if writing and not inside(p, sandbox):
            raise PermissionError("grading sandbox: %s(%r) is not allowed: code under test "
                                  "may only write inside its temporary directory"
                                  % (event, path))
        for d in deny:
            if inside(p, d):
                raise PermissionError("grading sandbox: %s(%r) is not allowed: the reference "
                                      "source and the grader's files are not readable while "
                                      "grading" % (event, path))

    forbidden = {
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
        "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle",
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        "os.startfile", "webbrowser.open", "sys.setprofile", "sys.settrace",
    }
    path_write = {"os.remove", "os.rename", "os.rmdir", "os.truncate", "os.chmod", "os.chown",
                  "os.link", "os.symlink", "os.mkdir", "os.utime", "os.chflags",
                  "shutil.rmtree", "shutil.move", "shutil.copyfile", "os.removexattr",
                  "os.setxattr"}

    def hook(event, args):
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = bool(mode and any(c in str(mode) for c in "wax+")) or \
                bool(isinstance(flags, int) and flags & write_flags)
            check_path(event, path, writing)
        elif event in forbidden:
            raise PermissionError("grading sandbox: %s is not allowed while grading" % event)
        elif event in path_write:
            for a in args[:2]:
                if isinstance(a, (str, bytes, os.PathLike)):
                    check_path(event, a, True)
        elif event in ("os.listdir", "os.scandir", "glob.glob"):
            if args and isinstance(args[0], (str, bytes, os.PathLike)):
                check_path(event, args[0], False)

    sys.addaudithook(hook)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    with np.load(cfg["inputs"], allow_pickle=False) as z:
        inputs = {k: z[k] for k in z.files}
    outputs_path, name = cfg["outputs"], cfg["exercise"]
    _install_hook(cfg["sandbox"], cfg["deny"])
    sys.path.insert(0, cfg["tree"])
    savez = np.savez
    try:
        from tinylm.assignments import exercises
        out = exercises.run(name, inputs)
        if not isinstance(out, dict):
            raise TypeError("the exercise returned %s, not a dict" % type(out).__name__)
        arrays = {}
        for k, v in out.items():
            a = np.asarray(v)
            if a.dtype.kind not in "biufc" and not (a.dtype.kind == "U" and
                                                    str(k).endswith(".error")):
                raise TypeError("%s is %s, not an array of numbers" % (k, type(v).__name__))
            arrays[str(k)] = a
    except BaseException:
        traceback.print_exc(limit=8)
        sys.stderr.flush()
        os._exit(1)
    savez(outputs_path, **arrays)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
