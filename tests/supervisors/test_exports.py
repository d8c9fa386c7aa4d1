"""The public surface of supervisors, and that it stays free of application code."""

from __future__ import annotations

import ast
import pathlib
import sys

import supervisors

ALLOWED_IMPORTS = {"trio", "attrs", "structlog"}


def test_public_names_are_exported_under_the_package_name() -> None:
    for name in supervisors.__all__:
        obj = getattr(supervisors, name)
        assert obj.__module__ == "supervisors", name
    assert sorted(supervisors.__all__) == supervisors.__all__


def test_the_library_imports_only_trio_attrs_structlog_and_the_stdlib() -> None:
    package = pathlib.Path(supervisors.__file__).parent
    outside: set[str] = set()
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            outside |= {r for r in roots if r not in ALLOWED_IMPORTS and r != "__future__"}
    assert outside <= set(sys.stdlib_module_names), outside - set(sys.stdlib_module_names)
