"""Shared pieces of the benchmarks: a dedicated PostgreSQL, job insertion, timing helpers."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from civic_runner.migrate import Migrator  # noqa: E402

from devenv.pg import PostgresServer  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def start_postgres() -> PostgresServer:
    # Durable defaults (fsync on, synchronous_commit on): numbers are for a real setup.
    server = PostgresServer(settings={"max_connections": "300", "shared_buffers": "512MB"})
    server.start()
    return server


def fresh_db(server: PostgresServer, name: str) -> str:
    url = server.create_database(name)
    with psycopg.connect(url, autocommit=True) as conn:
        Migrator(conn, "metadata").up(civic=False)
    return url


def insert_noop(url: str, n: int, queue: str = "default") -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        done = 0
        while done < n:
            batch = min(50_000, n - done)
            conn.execute(
                "INSERT INTO metadata.river_job (kind, args, queue, max_attempts) "
                "SELECT 'benchmark', jsonb_build_object('num', g), %s, 25 FROM generate_series(%s::int, %s::int) g",
                (queue, done + 1, done + batch),
            )
            done += batch
        conn.execute("VACUUM ANALYZE metadata.river_job")


def runner_env(url: str) -> dict[str, str]:
    """Environment of a benchmarked `civic-runner run`: the no-op kind, quiet logs, no HTTP port."""
    return {
        **os.environ,
        "DATABASE_URL": url,
        "CIVIC_KINDS_MODULES": "bench.kinds",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
        "CIVIC_HTTP_PORT": "0",
    }


def count_state(url: str, state: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM metadata.river_job WHERE state = %s", (state,)).fetchone()
        return int(row[0]) if row else 0


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pg = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgres": pg,
        "kernel": platform.release(),
    }
