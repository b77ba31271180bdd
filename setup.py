"""Builds worldstore's compiled kernels (worldstore/_kernels.c, _cow.c, _guard.c) as a plain shared library.

Everything else is in pyproject.toml. The library has no Python API: worldstore
loads it with ctypes and falls back to numpy where it is missing, so a build
without a C compiler still installs (with a warning) and works, only slower.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the kernels if a compiler is there; otherwise warn and install without them."""

    def run(self):
        try:
            super().run()
        except Exception as error:  # noqa: BLE001 - any compiler failure
            print(f"warning: worldstore's C kernels were not built ({error}); numpy fallbacks will be used")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as error:  # noqa: BLE001
            print(f"warning: worldstore's C kernels were not built ({error}); numpy fallbacks will be used")

    def get_export_symbols(self, ext):
        return []  # a ctypes library, not a Python module: no PyInit_ function to export


setup(
    ext_modules=[Extension("worldstore._kernels", ["worldstore/_kernels.c", "worldstore/_cow.c", "worldstore/_guard.c"],
                           depends=["worldstore/_signals.h"],
                           extra_compile_args=["-O3", "-fno-fast-math", "-fno-trapping-math", "-ffp-contract=off",
                                               "-pthread"],
                           extra_link_args=["-pthread"])],
    cmdclass={"build_ext": OptionalBuildExt},
)
