"""README's Quickstart runs as written, and runs again (a newcomer pastes it twice)."""

from __future__ import annotations

import os
import re

from conftest import ROOT, run_python


def quickstart() -> str:
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text[text.index("## Quickstart"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_quickstart_runs_twice_in_a_fresh_directory(tmp_path):
    code = f"import os; os.chdir({str(tmp_path)!r})\n" + quickstart()
    for _ in range(2):
        proc = run_python(code)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["1.0", "1", "[1]"], proc.stdout
    # No journal left beside it (portable mode's writer lock file, PATH-lock, stays: docs/platforms.md).
    assert [name for name in os.listdir(tmp_path) if not name.endswith("-lock")] == ["world.h5"]
    assert os.path.getsize(tmp_path / "world.h5") < 64 << 20
