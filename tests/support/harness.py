"""Runs runners for tests: in-process (in a thread with its own event loop) or as real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from civic_runner.config import RunnerConfig
from civic_runner.migrate import Migrator
from civic_runner.registry import Registry
from civic_runner.runner import Runner

ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def http_ok(url: str) -> bool:
    """A GET that answers 200 (an endpoint that is not up yet is False, not an error)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def migrate(url: str, schema: str = "metadata", civic: bool = False, target_main: int | None = None) -> None:
    """River's line to `target_main` (default: the latest, as for a database civic-runner creates)."""
    with psycopg.connect(url, autocommit=True) as conn:
        Migrator(conn, schema).up(target_main=target_main, civic=civic)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS test_runs (job_id bigint, attempt int, pid int, at timestamptz DEFAULT now())"
        )


def query(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def job(url: str, job_id: int) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            """SELECT id, state::text AS state, attempt, max_attempts, errors, metadata, scheduled_at, finalized_at,
                      attempted_by, attempted_at FROM metadata.river_job WHERE id = %s""",
            (job_id,),
        )
        row = cur.fetchone()
        assert row is not None, f"job {job_id} not found"
        return dict(zip([d.name for d in cur.description or []], row, strict=False))


def insert(url: str, kind: str, args: Any = None, count: int = 1, **cols: Any) -> list[int]:
    from psycopg.types.json import Jsonb

    names = ["kind", "args", *cols]
    values = [kind, Jsonb({} if args is None else args), *cols.values()]
    placeholders = ", ".join(["%s"] * len(names))
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        ids = [
            r[0]
            for r in conn.execute(
                f"INSERT INTO metadata.river_job ({', '.join(names)}) SELECT {placeholders} "
                "FROM generate_series(1, %s) RETURNING id",
                (*values, count),
            ).fetchall()
        ]
        queue = cols.get("queue", "default")
        conn.execute("SELECT pg_notify('metadata.river_insert', %s)", (f'{{"queue": "{queue}"}}',))
    return ids


class InProcessRunner:
    """A Runner on its own event loop in a thread; stop() is SIGTERM's path without the signal."""

    def __init__(self, url: str, registry: Registry, **settings: Any) -> None:
        values: dict[str, Any] = {"database_url": url, "http_port": 0, "queues": "default=5", **settings}
        self.cfg = RunnerConfig.from_values(values)
        self.runner = Runner(self.cfg, registry, install_signals=False)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self.exit_code: int | None = None
        self.error: BaseException | None = None

    def _main(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self.exit_code = self._loop.run_until_complete(self.runner.run())
        except BaseException as e:
            self.error = e
        finally:
            self._loop.close()

    def start(self) -> InProcessRunner:
        self._thread.start()

        def started() -> bool:
            r = self.runner
            listening = r.notifier is None or r.notifier.connected if r.producers else False
            return bool(self.error or (r.producers and r.ready()[0] and listening))

        wait_for(started, 15, what="runner ready")
        if self.error:
            raise self.error
        return self

    def stop(self, timeout: float = 60) -> None:
        if self._loop and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.runner.request_stop, "test")
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "runner did not stop"
        if self.error:
            raise self.error

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def __enter__(self) -> InProcessRunner:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class RunnerProcess:
    """`civic-runner run` as a real OS process, with the test kinds loaded."""

    def __init__(self, url: str, *args: str, env: dict[str, str] | None = None, log_path: Path | None = None):
        self.env = {
            **os.environ,
            "DATABASE_URL": url,
            "TEST_RECORD_URL": url,
            "CIVIC_KINDS_MODULES": "tests.support.kinds",
            "PYTHONPATH": str(ROOT),
            "CIVIC_HTTP_PORT": "0",
            "CIVIC_QUEUES": "default=10",
            **(env or {}),
        }
        self.args = args
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RunnerProcess:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "civic_runner.cli", "run", *self.args],
            env=self.env,
            stdout=out,
            stderr=out,
            cwd=ROOT,
        )
        return self

    def terminate(self, timeout: float = 60) -> int:
        assert self.proc
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc
        self.proc.kill()
        self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc
        return self.proc.wait(timeout)

    @property
    def pid(self) -> int:
        assert self.proc
        return self.proc.pid
