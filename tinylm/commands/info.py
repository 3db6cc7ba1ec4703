"""`tinylm info`: what tinylm is running on."""

import platform
import sys


def add_arguments(parser):
    pass


def _numpy_blas():
    import numpy as np
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return "%s %s" % (blas.get("name", "?"), blas.get("version", ""))
    except Exception:  # older NumPy: no mode="dicts"
        return "unknown"


def run(args):
    import numpy as np
    import tinylm
    from tinylm import kernels

    d = kernels.info()
    rows = [
        ("tinylm", tinylm.__version__),
        ("python", "%s (%s)" % (platform.python_version(), sys.executable)),
        ("machine", "%s %s" % (platform.system(), platform.machine())),
        ("numpy", "%s, BLAS: %s" % (np.__version__, _numpy_blas())),
        ("backend", "%s (%s)" % (d["backend"], d["backend_reason"])),
    ]
    if d["c_available"]:
        rows += [
            ("SIMD", d["simd"]),
            ("OpenMP", "yes" if d["openmp"] else "no (serial build)"),
            ("threads", str(d["num_threads"])),
            ("C flags", d["build_flags"]),
        ]
    else:
        rows.append(("C extension", "not available: %s" % d["c_error"]))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print("%-*s  %s" % (width, k, v))
    return 0
