"""Issue 19 item 8, enforced: tests are laid out like the package and no test file imports
another (what they share lives in tests/helpers.py, tests/serve_helpers.py or conftest.py)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src" / "resnetlab"


def imports_of_test_files(root: Path) -> list[str]:
    """``path: module`` for every import of a ``test_*`` module under ``root``, including a
    dynamic ``__import__("test_...")`` (which only works when that file's folder is on
    sys.path: it broke when one folder ran alone)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for name in _imported(node):
                if name.split(".")[-1].startswith("test_"):
                    found.append(f"{path.relative_to(root)}: {name}")
    return sorted(found)


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id in ("__import__", "import_module") and node.args
            and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
        return [node.args[0].value]
    return []


def test_no_test_file_imports_another():
    assert imports_of_test_files(TESTS) == []


def test_the_check_sees_a_dynamic_import(tmp_path):
    (tmp_path / "test_a.py").write_text('m = __import__("test_b")\nfrom test_c import x\n')
    assert imports_of_test_files(tmp_path) == ["test_a.py: test_b", "test_a.py: test_c"]


def test_test_folders_mirror_the_package():
    """Every test folder but style/docs/benchmarks is named after a package (or a module, such
    as checkpoint.py) of resnetlab."""
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    packages |= {p.stem for p in SRC.glob("*.py") if not p.name.startswith("_")}
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    assert folders - packages <= {"style", "docs", "benchmarks"}, folders - packages
    assert not list(TESTS.glob("test_*.py")), "test files belong in the package's folder"
