"""Builds worldstore's compiled libraries as plain shared libraries, each where it can work.

- ``worldstore._kernels`` (``_kernels.c``): merging, searching and decaying
  sparse layers, the window gather, changed pages. Every platform with a C
  compiler: gcc or clang (pthreads), mingw or MSVC (Win32 threads).
- ``worldstore._cow`` (``_cow.c``): a writer's copies of 2 MiB blocks. Linux
  only: it needs ``mremap``.
- ``worldstore._guard`` (``_guard.c``): files cut short under a mapping read
  zeros instead of SIGBUS. POSIX systems.

Everything else is in pyproject.toml. The libraries have no Python API:
worldstore loads each with ctypes and does without any that is missing (numpy
twins of the kernels, MAP_PRIVATE copies, no guard), so a build without a C
compiler still installs (with a warning) and works, only slower.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build each library if a compiler can; otherwise warn and install without it."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - any compiler failure
            print(f"warning: worldstore's C libraries were not built ({error}); worldstore does without them")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001
            print(f"warning: {ext.name} was not built ({error}); worldstore does without it")

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":  # cl and link take their own options; threads are Win32's
            for ext in self.extensions:
                ext.extra_compile_args, ext.extra_link_args = list(_MSVC_FLAGS), []
        super().build_extensions()

    def get_export_symbols(self, ext):
        return []  # a ctypes library, not a Python module: no PyInit_ function to export


_FLAGS = dict(extra_compile_args=["-O3", "-fno-fast-math", "-fno-trapping-math", "-ffp-contract=off", "-pthread"],
              extra_link_args=["-pthread"])
#: MSVC: /O2, and /fp:precise (no contraction into FMA since Visual Studio 2022), so results match numpy.
_MSVC_FLAGS = ["/O2", "/fp:precise"]
_LIBRARIES = [Extension("worldstore._kernels", ["worldstore/_kernels.c"], **_FLAGS)]
if sys.platform.startswith("linux"):
    _LIBRARIES.append(Extension("worldstore._cow", ["worldstore/_cow.c"], depends=["worldstore/_signals.h"], **_FLAGS))
if os.name == "posix":
    _LIBRARIES.append(Extension("worldstore._guard", ["worldstore/_guard.c"], depends=["worldstore/_signals.h"],
                                **_FLAGS))

setup(ext_modules=_LIBRARIES, cmdclass={"build_ext": OptionalBuildExt})
