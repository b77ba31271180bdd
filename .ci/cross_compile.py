"""Cross-compile worldstore's C libraries for macOS and Windows with zig (PyPI's ziglang), and check exports.

Issue 14: the kernels must build and load on macOS (clang) and Windows (mingw), with their functions
exported; the guard builds on every POSIX system; the block copier is Linux only (mremap) and is built
nowhere else. This cannot load the results (no such machines here), so it checks that each library
compiles and links as a shared library for each target, and that every function worldstore's ctypes
loader types (worldstore/_native.py) is in its export names.

    python .ci/cross_compile.py        # needs: pip install ziglang
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from worldstore import _native  # noqa: E402

TARGETS = {"x86_64-macos": ("_kernels", "_guard"), "aarch64-macos": ("_kernels", "_guard"),
           "x86_64-windows-gnu": ("_kernels",)}
FUNCTIONS = {"_kernels": _native._KERNELS, "_guard": _native._GUARD}


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory() as directory:
        for target, libraries in TARGETS.items():
            for library in libraries:
                out = os.path.join(directory, f"{library}-{target}.lib")
                command = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-O2", "-shared", "-pthread",
                           "-fno-fast-math", "-ffp-contract=off", os.path.join(ROOT, "worldstore", library + ".c"),
                           "-o", out]
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    print(f"FAIL {target} {library}: {result.stderr.strip()[:500]}")
                    failures += 1
                    continue
                with open(out, "rb") as f:
                    binary = f.read()
                missing = [name for name in FUNCTIONS[library] if name.encode() not in binary]
                if missing:
                    print(f"FAIL {target} {library}: not exported: {', '.join(missing)}")
                    failures += 1
                else:
                    print(f"PASS {target} {library}: {len(FUNCTIONS[library])} functions, {len(binary)} bytes")
    print(f"{'FAILED' if failures else 'PASSED'}: cross-compiled worldstore's C libraries, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
