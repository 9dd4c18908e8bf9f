"""Check the import graph of `backend/` (tests excluded): no cycles, and no layer importing upward.

Layers, top to bottom (a module may import its own layer and those below it):

    main → routers → deps, middleware → services → repositories → models, errors, config

Every import counts, also those inside functions and `if TYPE_CHECKING:` blocks: a cycle hidden
behind a lazy import is still a cycle. A new top-level module or folder must be given a layer
here. (import-linter would do this, but it only takes packages as roots, and `backend/` is an
import root of plain modules.) Run: `python tools/check_imports.py [backend-dir]`.
"""

from __future__ import annotations

import ast
import graphlib
import sys
from pathlib import Path

LAYERS: list[frozenset[str]] = [
    frozenset({"main"}),
    frozenset({"routers"}),
    frozenset({"deps", "middleware"}),
    frozenset({"services"}),
    frozenset({"repositories"}),
    frozenset({"models", "errors", "config"}),
]
EXCLUDED_DIRS = frozenset({"tests", "__pycache__"})


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def find_modules(root: Path) -> dict[str, Path]:
    """Every module under `root` by dotted name, test folders left out."""
    return {
        module_name(root, path): path
        for path in sorted(root.rglob("*.py"))
        if not EXCLUDED_DIRS.intersection(path.relative_to(root).parts)
    }


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of `modules` that `name` imports (`from a import b` is module `a.b` when that
    is a module, else `a`)."""

    def resolve(target: str) -> str | None:  # `import a.b.c` needs a.b.c, or the nearest parent
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(resolve(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, `level - 1` packages up
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else resolve(base))
    return {target for target in found if target is not None and target != name}


def layer_of(name: str) -> int | None:
    top = name.partition(".")[0]
    return next((i for i, layer in enumerate(LAYERS) if top in layer), None)


def problems(root: Path) -> list[str]:
    modules = find_modules(root)
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    found: list[str] = []
    for name in sorted(graph):
        own = layer_of(name)
        if own is None:
            found.append(f"{name}: in no layer (give its top-level name a layer in {__file__})")
            continue
        for target in sorted(graph[name]):
            theirs = layer_of(target)
            if theirs is not None and theirs < own:
                found.append(f"{name} imports {target}: a layer above it")
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as cycle:
        found.append("import cycle: " + " -> ".join(cycle.args[1]))
    return found


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent / "backend")
    found = problems(root)
    for line in found:
        print(f"check_imports: {line}", file=sys.stderr)
    if not found:
        print(f"check_imports: {len(find_modules(root))} modules, no cycle, no upward import")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
