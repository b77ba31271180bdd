"""Cross-compile worldstore's C libraries for macOS and Windows with zig (PyPI's ziglang), and check exports.

Issue 14: the kernels must build and load on macOS (clang) and Windows (mingw), with their functions
exported; the guard builds on every POSIX system; the block copier is Linux only (mremap) and is built
nowhere else. This cannot load the results (no such machines here), so it checks that each library
compiles and links as a shared library for each target, and reads each binary's own tables with lief
(a well-kept parser of Mach-O and PE files; a byte search would also find names a DLL does not export):

- every function worldstore's ctypes loader types (worldstore/_native.py) is in the export table, and
  on Windows nothing else is (the functions are marked __declspec(dllexport));
- a Windows build imports only system DLLs (Win32 threads, not libwinpthread, which a user would not have).

The MSVC branches of _kernels.c (intrinsics in place of GCC builtins) cannot be compiled here: zig has no
MSVC headers. The GitHub workflow's Windows jobs build with MSVC.

    python .ci/cross_compile.py        # needs: pip install ziglang lief
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from worldstore import _native  # noqa: E402

import lief  # noqa: E402

lief.logging.disable()

TARGETS = {"x86_64-macos": ("_kernels", "_guard"), "aarch64-macos": ("_kernels", "_guard"),
           "x86_64-windows-gnu": ("_kernels",), "aarch64-windows-gnu": ("_kernels",)}
#: What a Windows build may import: the system's own DLLs.
SYSTEM_DLLS = ("kernel32.dll", "api-ms-win-", "ucrtbase.dll", "msvcrt.dll")


def problems(path: str, library: str, target: str) -> list[str]:
    """What is wrong with one built library: missing or extra exports, a DLL a user would not have."""
    binary = lief.parse(path)
    if binary is None:
        return ["lief cannot read the binary"]
    exported = {symbol.name.lstrip("_") if "macos" in target else symbol.name for symbol in binary.exported_functions}
    wanted = set(FUNCTIONS[library])
    found = [f"not exported: {', '.join(sorted(wanted - exported))}"] if wanted - exported else []
    if "windows" in target:
        if exported - wanted:
            found.append(f"exports more than worldstore loads: {', '.join(sorted(exported - wanted))}")
        imports = [name if isinstance(name, str) else name.name for name in binary.libraries]
        foreign = [name for name in imports if not name.lower().startswith(SYSTEM_DLLS)]
        if foreign:
            found.append(f"imports DLLs a user may not have: {', '.join(foreign)}")
    return found
FUNCTIONS = {"_kernels": _native._KERNELS, "_guard": _native._GUARD}


def main() -> int:
    failures = 0
    with tempfile.TemporaryDirectory() as directory:
        for target, libraries in TARGETS.items():
            for library in libraries:
                out = os.path.join(directory, f"{library}-{target}.lib")
                threads = [] if "windows" in target else ["-pthread"]
                command = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-O2", "-shared", *threads,
                           "-fno-fast-math", "-ffp-contract=off", os.path.join(ROOT, "worldstore", library + ".c"),
                           "-o", out]
                result = subprocess.run(command, capture_output=True, text=True)
                if result.returncode != 0:
                    print(f"FAIL {target} {library}: {result.stderr.strip()[:500]}")
                    failures += 1
                    continue
                found = problems(out, library, target)
                if found:
                    print(f"FAIL {target} {library}: {'; '.join(found)}")
                    failures += 1
                else:
                    print(f"PASS {target} {library}: exports the {len(FUNCTIONS[library])} functions worldstore "
                          f"loads, {os.path.getsize(out)} bytes")
    print(f"{'FAILED' if failures else 'PASSED'}: cross-compiled worldstore's C libraries, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
