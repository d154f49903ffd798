"""River's own Go programs, built from the Go module proxy into the cache (not skipped when missing:
a missing Go toolchain is a failure of the environment, reported as such)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _built(script: str) -> str:
    r = subprocess.run([str(ROOT / script)], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{script} failed:\n{r.stderr[-3000:]}"
    return r.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def river_cli() -> str:
    return _built("scripts/river/install-cli.sh")


@pytest.fixture(scope="session")
def river_interop() -> str:
    return _built("tests/interop/go/build.sh")
