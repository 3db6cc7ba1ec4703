"""cffi builder for tinylm's C kernels (API / out-of-line mode).

setup.py names this file in ``cffi_modules``; it can also be run by hand
(``python csrc/build_ffi.py``) to build ``tinylm/_C*.so`` in place.

Compiler flags are *probed*, never assumed:

* ``-O3 -fno-math-errno`` always (the kernels never read errno; without the
  flag a loop calling sqrt() cannot be vectorised); never ``-ffast-math`` (it
  breaks NaN/inf handling).
* SIMD follows the build machine: ``-march=native`` (x86, and clang on ARM) or
  ``-mcpu=native`` (gcc on aarch64) if the compiler accepts it, else the
  compiler's default target.  The kernels read ``__AVX512F__`` / ``__AVX2__`` /
  ``__ARM_NEON`` to pick their vector width, so a build without AVX-512 never
  silently turns a 64-byte vector type into scalar code.
* OpenMP: ``-fopenmp`` if a test program compiles *and links* with it; Apple
  clang's ``-Xpreprocessor -fopenmp -lomp`` is tried next; otherwise a serial
  build.

Environment overrides:

* ``TINYLM_MARCH``      - replaces the probed ``-march`` flag (e.g. ``x86-64-v3``;
                          ``none`` for the compiler default).
* ``TINYLM_OPENMP=0``   - force a serial build.
* ``TINYLM_CFLAGS`` / ``TINYLM_LDFLAGS`` - extra flags appended at the end.
* ``TINYLM_SANITIZE=1`` - AddressSanitizer + UndefinedBehaviorSanitizer build
                          (``-O1 -g``); load it with
                          ``LD_PRELOAD=$(gcc -print-file-name=libasan.so)``.
"""

import os
import shlex
import sys
import tempfile

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

def read_cdef():
    """The C API seen from Python: the declarations of csrc/tinylm.h (its one copy),
    without the preprocessor lines cffi's cdef does not parse."""
    with open(os.path.join(HERE, "tinylm.h"), encoding="utf-8") as f:
        return "".join(line for line in f if not line.lstrip().startswith("#"))


SOURCES = ["matmul.c", "attention.c", "attention_plain.c", "fused.c", "recurrent.c", "info.c"]


def _new_compiler():
    """A configured distutils-style compiler, or None if there is none."""
    try:
        from setuptools._distutils.ccompiler import new_compiler
        from setuptools._distutils.sysconfig import customize_compiler
    except ImportError:  # pragma: no cover - very old setuptools
        from distutils.ccompiler import new_compiler
        from distutils.sysconfig import customize_compiler
    try:
        cc = new_compiler()
        customize_compiler(cc)
        return cc
    except Exception:
        return None


def _try_build(cc, code, cflags, ldflags=(), link=True):
    """Compile (and link) a tiny program with the given flags; True if it works."""
    if cc is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(code)
        try:
            # Silence the compiler's complaints: a failed probe is an answer.
            devnull = os.open(os.devnull, os.O_WRONLY)
            saved = os.dup(2)
            os.dup2(devnull, 2)
            try:
                objs = cc.compile([src], output_dir=tmp, extra_postargs=list(cflags))
                if link:
                    cc.link_executable(objs, os.path.join(tmp, "probe"),
                                       extra_postargs=list(ldflags))
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                os.close(devnull)
            return True
        except Exception:
            return False


_MAIN = "int main(void) { return 0; }\n"
_OMP = (
    "#include <omp.h>\n"
    "int main(void) { int n = 0;\n"
    "#pragma omp parallel reduction(+:n)\n"
    "  n += 1;\n"
    "  return omp_get_max_threads() > 0 && n > 0 ? 0 : 1; }\n"
)


def probe_flags():
    """Return (cflags, ldflags, notes) for this compiler and machine."""
    cc = _new_compiler()
    notes = []
    # -fno-math-errno: the kernels never read errno, and with it sqrt() vectorises
    cflags = ["-O3", "-fno-math-errno"]
    ldflags = []

    march = os.environ.get("TINYLM_MARCH")
    if march:
        if march.lower() != "none":
            cflags.append("-march=" + march)
        notes.append("march from TINYLM_MARCH=" + march)
    else:
        for flag in ("-march=native", "-mcpu=native"):
            if _try_build(cc, _MAIN, cflags + [flag], link=False):
                cflags.append(flag)
                break
        else:
            notes.append("no -march=native: compiler default target")

    if os.environ.get("TINYLM_OPENMP", "1") != "0":
        for cf, lf in ((["-fopenmp"], ["-fopenmp"]),
                       (["-Xpreprocessor", "-fopenmp"], ["-lomp"])):
            if _try_build(cc, _OMP, cflags + cf, lf):
                cflags += cf
                ldflags += lf
                break
        else:
            notes.append("OpenMP not available: serial build")
    else:
        notes.append("OpenMP disabled by TINYLM_OPENMP=0")
    if "-fopenmp" not in cflags:
        cflags.append("-Wno-unknown-pragmas")     # the kernels' omp pragmas are expected

    if os.environ.get("TINYLM_SANITIZE", "0") not in ("", "0"):
        san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
               "-fno-sanitize-recover=undefined", "-g"]
        cflags = [f for f in cflags if f != "-O3"] + ["-O1"] + san
        ldflags += san
        notes.append("sanitizer build (ASan+UBSan)")

    cflags += shlex.split(os.environ.get("TINYLM_CFLAGS", ""))
    ldflags += shlex.split(os.environ.get("TINYLM_LDFLAGS", ""))
    return cflags, ldflags, notes


def make_builder(absolute=False):
    """The FFI object; paths relative to the project root (what setuptools
    wants) unless absolute=True (the in-place build below)."""
    path = os.path.abspath if absolute else os.path.relpath
    cflags, ldflags, notes = probe_flags()
    flag_text = " ".join(cflags + ldflags).replace("\\", "\\\\").replace('"', '\\"')
    for n in notes:
        print("tinylm build: " + n, file=sys.stderr)
    print("tinylm build flags: " + flag_text, file=sys.stderr)
    ffi = FFI()
    ffi.cdef(read_cdef())
    ffi.set_source(
        "tinylm._C",
        '#include "tinylm.h"\n',
        sources=[path(os.path.join(HERE, s)) for s in SOURCES],
        include_dirs=[path(HERE)],
        # the headers and the .inc files the sources include: a change rebuilds
        depends=sorted(path(os.path.join(HERE, f)) for f in os.listdir(HERE)
                       if f.endswith((".h", ".inc"))),
        define_macros=[("TL_BUILD_FLAGS", '"%s"' % flag_text)],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )
    return ffi


if __name__ == "__main__":
    # In-place build for development: writes tinylm/_C*.so next to the package.
    # TINYLM_BUILD_TMP picks the scratch folder (so two builds can run at once);
    # the .so is replaced atomically, so a running process is never corrupted.
    import glob
    import shutil
    ffibuilder = make_builder(absolute=True)
    root = os.path.dirname(HERE)
    tmp = os.environ.get("TINYLM_BUILD_TMP") or os.path.join(root, "build", "cffi")
    ffibuilder.compile(tmpdir=tmp, verbose=True)
    for so in glob.glob(os.path.join(tmp, "tinylm", "_C*")):
        if so.endswith((".so", ".pyd")):
            dest = os.path.join(root, "tinylm", os.path.basename(so))
            shutil.copy(so, dest + ".tmp")
            os.replace(dest + ".tmp", dest)
            print("installed", dest)
else:
    ffibuilder = make_builder()
