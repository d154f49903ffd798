"""River's own Go programs, built from the Go module proxy into the cache (not skipped when missing:
a missing Go toolchain is a failure of the environment, reported as such)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _built(script: str) -> str:
    r = subprocess.run([str(ROOT / script)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{script} failed:\n{r.stderr[-3000:]}"
    return r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def river_cli() -> str:
    """River's CLI v0.47.0 (its module is not served past that)."""
    return _built("scripts/river/install-cli.sh")


@pytest.fixture(scope="session")
def river_interop() -> str:
    """tests/interop/go at the River version its go.mod pins (v0.51.2)."""
    return _built("tests/interop/go/build.sh")


class GoRiver:
    """River's Go client and migrator on one database, through river-interop's subcommands."""

    def __init__(self, binary: str, url: str, schema: str = "metadata") -> None:
        self.binary, self.url, self.schema = binary, url, schema

    def argv(self, sub: str, *args: str) -> list[str]:
        return [self.binary, sub, "--database-url", self.url, "--schema", self.schema, *args]

    def run(self, sub: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.argv(sub, *args), capture_output=True, text=True, timeout=timeout)

    def __call__(self, sub: str, *args: str, timeout: float = 120) -> Any:
        """Run a subcommand that must succeed; its JSON result."""
        r = self.run(sub, *args, timeout=timeout)
        assert r.returncode == 0, f"river-interop {sub} {args}: {r.stdout}{r.stderr}"
        return json.loads(r.stdout)

    def insert(self, kind: str, *args: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self("insert", "--kind", kind, *args)
        return result

    def get(self, job_id: int) -> dict[str, Any]:
        result: dict[str, Any] = self("get", "--id", str(job_id))
        return result

    def popen(self, sub: str, *args: str, log: Path) -> subprocess.Popen[str]:
        out = open(log, "a")  # noqa: SIM115 - the child owns it
        return subprocess.Popen(self.argv(sub, *args), stdout=out, stderr=out, text=True)


@pytest.fixture
def go(db_url: str, river_interop: str) -> GoRiver:
    return GoRiver(river_interop, db_url)
