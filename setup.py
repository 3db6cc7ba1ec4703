"""Install tinylm: `pip install .` (tests: `pip install ".[test]"`).

The C kernels in csrc/ are built by cffi (csrc/build_ffi.py).  If they cannot
be built - no compiler, a broken toolchain - the install still succeeds and
tinylm runs on its NumPy backend, saying so when imported.
"""

import sys

from setuptools import find_packages, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed C build into a warning, not a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler at all (DistutilsPlatformError, ...)
            self._warn(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # CompileError, LinkError, ...
            self._warn(exc)

    @staticmethod
    def _warn(exc):
        bar = "*" * 72
        print("\n%s\ntinylm: the C kernels could not be built (%s: %s).\n"
              "tinylm will run on its NumPy backend (correct, slower).\n%s\n"
              % (bar, type(exc).__name__, exc, bar), file=sys.stderr)


setup(
    name="tinylm",
    version="0.1.0",
    description="Language models from scratch: NumPy layers with hand-derived "
                "backward passes, C kernels, lessons and assignments.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    # The lesson scripts are installed as tinylm/lessons so `tinylm lesson`
    # finds them outside a checkout too.
    packages=find_packages(include=["tinylm", "tinylm.*"]) + ["tinylm.lessons"],
    package_dir={"tinylm.lessons": "lessons"},
    # The small pretrained GPT (3.4 MB; scripts/train_packaged_model.py makes it).
    package_data={"tinylm.lessons": ["README.md"], "tinylm": ["assets/*.npz"]},
    include_package_data=False,
    # numpy>=1.23.2: the oldest NumPy with wheels for Python 3.11 (CI's Python;
    # older ones would build from source), and the version CI installs to run
    # the floor tests (.ci/run, "oldest supported NumPy").  Nothing older is tested.
    install_requires=["numpy>=1.23.2", "cffi>=1.15", "matplotlib>=3.5"],
    # mpi: data-parallel training (`mpiexec -n N tinylm train`).  mpi4py and
    # MPICH both come as binary wheels from PyPI, so no system MPI or compiler
    # is needed; MPICH (not Open MPI) because its wheel runs as root without
    # extra flags and its ABI is the one Intel MPI, MVAPICH and Cray MPICH
    # share, so the same mpi4py also runs on a cluster's own MPI.
    extras_require={"test": ["pytest>=7", "hypothesis>=6"],
                    "mpi": ["mpi4py>=4.0", "mpich>=4.2"]},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["csrc/build_ffi.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
    entry_points={"console_scripts": ["tinylm=tinylm.cli:main"]},
    zip_safe=False,
)
