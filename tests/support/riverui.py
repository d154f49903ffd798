"""River UI (riverqueue.com/riverui, River's web UI) for tests: the binary that scripts/riverui/install.sh
builds into the cache, run as a process on a test database, and a directory for what a browser saw."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from devenv import processes
from devenv.pg import free_port
from tests.support.harness import http_ok, wait_for

ROOT = Path(__file__).resolve().parents[2]
VERSION = "v0.22.0"
LOGIN = ("civic", "river-ui-test")  # the basic auth the tests' River UI asks for


def binary() -> str:
    """Build (once, cached by version) and return the path of River UI's binary."""
    r = subprocess.run(
        [str(ROOT / "scripts" / "riverui" / "install.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "RIVERUI_VERSION": VERSION},
    )
    assert r.returncode == 0, f"scripts/riverui/install.sh failed:\n{r.stderr[-3000:]}"
    return r.stdout.strip().splitlines()[-1]


def artifacts_dir(test_name: str) -> Path:
    """Where a test leaves its screenshots: $CIVIC_TEST_ARTIFACTS (default test-artifacts/, ignored by git)."""
    base = Path(os.environ.get("CIVIC_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path = base / "riverui" / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    path.mkdir(parents=True, exist_ok=True)
    for old in path.glob("*.png"):
        old.unlink()
    return path


class RiverUIProcess:
    """`riverui -schema <schema>` on loopback with basic auth; stop() ends it."""

    def __init__(self, exe: str, database_url: str, schema: str = "metadata", log_path: Path | None = None) -> None:
        self.exe = exe
        self.database_url = database_url
        self.schema = schema
        self.port = free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RiverUIProcess:
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "PORT": str(self.port),
            "RIVER_HOST": "127.0.0.1",
            "RIVER_BASIC_AUTH_USER": LOGIN[0],
            "RIVER_BASIC_AUTH_PASS": LOGIN[1],
            "RIVER_LOG_FORMAT": "json",
        }
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [self.exe, f"-schema={self.schema}", "-silent-healthchecks"], env=env, stdout=out, stderr=out
        )

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"riverui exited with {self.proc.returncode} (log: {self.log_path})")
            return http_ok(f"{self.url}/api/health-checks/complete")

        wait_for(up, 30, interval=0.1, what="River UI's complete health check")
        return self

    def stop(self) -> None:
        processes.stop(self.proc)

    def __enter__(self) -> RiverUIProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
