"""worldstore's modules depend in one direction (issue 15, "Structure"; the developers' guide):
foundations, then storage, then the commit engine, then the world, then the operations, then the package.

Every import counts, those inside functions and under ``if TYPE_CHECKING:`` too: a module lower down never
names one above it, and no modules import one another in a circle.
"""

from __future__ import annotations

import ast
import os

from conftest import ROOT

PACKAGE = os.path.join(ROOT, "worldstore")

#: The levels, lowest first. A module may import modules of its own level or lower ones.
LEVELS = [
    {"errors", "_version", "_extras", "_platform", "_native", "spec", "temporal", "_windows", "_schema", "render",
     "_view_pages", "presets", "slots"},
    {"storage", "storage.mapped", "storage.memory", "storage.pages", "storage.sparse", "storage._cells",
     "storage.hdf5journal"},
    {"recovery", "commit"},
    {"layer", "world"},
    {"observe", "history", "summary", "compaction", "analysis", "demo", "validate", "mesa",
     "agentfarm", "view"},
    {"__init__"},
]
LEVEL = {module: index for index, modules in enumerate(LEVELS) for module in modules}


def module_names() -> list[str]:
    names = []
    for directory, _, files in os.walk(PACKAGE):
        for file in files:
            if file.endswith(".py"):
                relative = os.path.relpath(os.path.join(directory, file), PACKAGE)[:-3].replace(os.sep, ".")
                names.append("storage" if relative == "storage.__init__" else relative)
    return sorted(names)


def imports_of(module: str) -> set[str]:
    """The worldstore modules ``module`` imports, anywhere in its source."""
    path = os.path.join(PACKAGE, *("storage/__init__" if module == "storage" else module).split(".")) + ".py"
    package = module.split(".")[:-1] if module != "storage" else ["storage"]
    if module == "__init__":
        package = []
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join([*base, *(node.module.split(".") if node.module else [])])
            names = [target] if node.module else []
            for alias in node.names:  # "from . import commit" imports a module; "from .spec import X" does not
                candidate = ".".join(filter(None, [target, alias.name]))
                if candidate in LEVEL or (candidate == "storage"):
                    names.append(candidate)
            found.update(name for name in names if name in LEVEL)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("worldstore."):
            found.add(node.module[len("worldstore."):])
        elif isinstance(node, ast.Import):
            found.update(alias.name[len("worldstore."):] for alias in node.names
                         if alias.name.startswith("worldstore."))
    found.discard(module)
    return found


def test_every_module_has_a_level():
    assert set(module_names()) == set(LEVEL), "add new modules to LEVELS"


def test_no_module_imports_one_above_it():
    upward = [f"{module} (level {LEVEL[module]}) imports {other} (level {LEVEL[other]})"
              for module in module_names() for other in sorted(imports_of(module)) if LEVEL[other] > LEVEL[module]]
    assert not upward, "\n".join(upward)


def test_no_modules_import_one_another_in_a_circle():
    graph = {module: imports_of(module) for module in module_names()}
    state: dict[str, int] = {}
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for other in sorted(graph[module]):
            if state.get(other) == 1:
                cycles.append(" -> ".join(path[path.index(other):] + [other]))
            elif other not in state:
                visit(other, path + [other])
        state[module] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)
