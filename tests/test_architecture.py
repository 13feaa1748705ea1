"""The layout's rules that import-linter does not check: modules import each other's public
names only, and a module holds about one idea (at most ~600 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lifecycle", "models", "batch", "serving")
MAX_LINES = 600


def _modules() -> list[Path]:
    return sorted(
        p
        for pkg in PACKAGES
        for p in (ROOT / pkg).rglob("*.py")
        if "demo-data" not in p.parts  # shipped sample artifacts, not toolkit code
    )


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private_imports(path: Path) -> list[str]:
    """``from other.module import _name`` anywhere in the file (function-local included)."""
    own = _module_name(path)
    package = own if path.name == "__init__.py" else own.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        if node.module.split(".")[0] not in PACKAGES or node.module == own:
            continue
        for alias in node.names:
            name = alias.name
            private_name = name.startswith("_") and not name.startswith("__")
            # A private module (``from models import _designer_pyfunc``) may be imported by
            # its own package only.
            private_module = f"{node.module}.{name}"
            if private_name and not (
                (ROOT / Path(*private_module.split("."))).with_suffix(".py").is_file()
                and node.module == package
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {node.module}.{name}")
    return found


def test_modules_import_public_names_only() -> None:
    offenders = [line for path in _modules() for line in _private_imports(path)]
    assert offenders == []


def test_the_private_name_check_catches_a_private_import(tmp_path: Path) -> None:
    # The check above must be able to fail: a module that reaches into another's private
    # name is reported.
    pkg = ROOT / "batch"
    probe = pkg / "_architecture_probe_tmp.py"
    probe.write_text("from batch.engine import _is_dir_target\n", encoding="utf-8")
    try:
        assert _private_imports(probe) == [
            "batch/_architecture_probe_tmp.py:1 imports batch.engine._is_dir_target"
        ]
    finally:
        probe.unlink()


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_is_at_most_600_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it by concept"
