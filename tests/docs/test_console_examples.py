"""The ```console blocks of the docs: their `$ ` command runs, and prints what the block shows.

A string in the shown output may elide part of itself with `…`; everything else must be equal (as JSON).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from typing import Any

import pytest

from devenv import civic_os
from devenv.pg import PostgresServer
from tests.docs.markdown import ROOT, fenced_block

pytestmark = pytest.mark.integration


def command_and_output(page: str, label: str) -> tuple[list[str], str]:
    first, _, rest = fenced_block((ROOT / page).read_text(), label).partition("\n")
    assert first.startswith("$ "), first
    return shlex.split(first[2:]), rest


def matches(shown: Any, actual: Any) -> bool:
    """`actual` is what `shown` shows: equal, but for the parts of strings the docs elide with `…`."""
    if isinstance(shown, str) and isinstance(actual, str) and "…" in shown:
        return re.fullmatch(".*".join(map(re.escape, shown.split("…"))), actual, re.DOTALL) is not None
    if isinstance(shown, dict) and isinstance(actual, dict):
        return shown.keys() == actual.keys() and all(matches(v, actual[k]) for k, v in shown.items())
    if isinstance(shown, list) and isinstance(actual, list):
        return len(shown) == len(actual) and all(map(matches, shown, actual))
    return bool(shown == actual)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("shown", "actual", "expected"),
    [
        ({"a": "x (…): y"}, {"a": "x (anything at all): y"}, True),
        ({"a": "x (…): y"}, {"a": "x (anything): z"}, False),
        ({"a": [1, "b"]}, {"a": [1, "b"]}, True),
        ({"a": 1}, {"a": 1, "b": 2}, False),
        ({"a": "…"}, {"a": 1}, False),
    ],
)
def test_matches(shown: Any, actual: Any, expected: bool) -> None:
    assert matches(shown, actual) is expected


def test_civic_os_migrate(pg_server: PostgresServer) -> None:
    """civic-os.md's ```console civic-os-migrate, on the Civic OS v0.70 fixture's database."""
    argv, shown = command_and_output("docs/civic-os.md", "civic-os-migrate")
    assert argv == ["civic-runner", "migrate"], argv
    url = pg_server.create_database("civic_os_console")
    civic_os.install(url)
    env = {**os.environ, "DATABASE_URL": url, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert matches(json.loads(shown), json.loads(r.stdout)), f"the docs show:\n{shown}\nit prints:\n{r.stdout}"
