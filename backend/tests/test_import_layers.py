"""The import graph check of `make lint` (tools/check_imports.py): clean on this tree, and it
does fail on an upward import, a cycle and a module in no layer."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from config import BACKEND_DIR, PROJECT_DIR


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "check_imports", PROJECT_DIR / "tools" / "check_imports.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


check_imports = _load_checker()


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def test_the_backend_has_no_cycle_and_no_upward_import() -> None:
    assert check_imports.problems(BACKEND_DIR) == []


def test_tests_are_left_out_of_the_graph() -> None:
    assert not any(name.startswith("tests") for name in check_imports.find_modules(BACKEND_DIR))


def test_an_upward_import_is_reported(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "routers/__init__.py": "",
            "routers/memory.py": "import models\n",
            "repositories/__init__.py": "",
            "repositories/base.py": "def f():\n    from routers import memory\n",
            "models.py": "",
        },
    )
    assert check_imports.problems(root) == [
        "repositories.base imports routers.memory: a layer above it"
    ]


def test_a_cycle_is_reported_even_through_type_checking_imports(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "services/__init__.py": "",
            "services/a.py": "from services.b import thing\n",
            "services/b.py": (
                "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from services import a\n"
            ),
        },
    )
    [problem] = check_imports.problems(root)
    assert problem.startswith("import cycle: ")
    assert set(problem.removeprefix("import cycle: ").split(" -> ")) == {"services.a", "services.b"}


def test_a_module_in_no_layer_is_reported(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"helpers.py": "import models\n", "models.py": ""})
    [problem] = check_imports.problems(root)
    assert problem.startswith("helpers: in no layer")


def test_the_command_exits_non_zero_on_a_problem(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"models.py": "import main\n", "main.py": ""})
    assert check_imports.main(["check_imports", str(root)]) == 1
    assert check_imports.main(["check_imports", str(BACKEND_DIR)]) == 0
