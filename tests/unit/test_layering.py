"""Who may import whom: the runner and the operator import neither the dev environment nor the tests;
scripts/, bench/ and devenv/ never import from tests/ (what they share with the tests lives in devenv/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RULES = {
    "job-runner/src": ("tests", "devenv", "bench", "scripts"),
    "operator/src": ("tests", "devenv", "bench", "scripts"),
    "devenv": ("tests", "bench", "scripts"),
    "scripts": ("tests",),
    "bench": ("tests",),
}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(tree: str, forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in sorted((ROOT / tree).rglob("*.py")):
        if "node_modules" in path.parts:
            continue
        for name in imported_modules(path):
            if name.split(".")[0] in forbidden:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


@pytest.mark.parametrize("tree", sorted(RULES))
def test_tree_imports_only_what_it_may(tree: str) -> None:
    assert (ROOT / tree).is_dir()
    assert violations(tree, RULES[tree]) == []


def test_the_check_sees_an_import_from_tests(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom tests.support.harness import query\nfrom . import sibling\n")
    assert imported_modules(module) == {"os", "tests.support.harness"}
