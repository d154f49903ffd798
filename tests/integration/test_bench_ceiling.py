"""The throughput bench's SQL ceiling and drain watch, against a real PostgreSQL server and pgbench."""

from __future__ import annotations

import time

import psycopg
import pytest

from bench import burst, ceiling, cpu
from bench.common import fresh_db
from devenv.pg import PostgresServer


def _vacuums(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = 'metadata.river_job'::regclass"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("insert", ceiling.INSERTS)
def test_the_ceiling_works_every_job_of_either_insert(pg_server: PostgresServer, insert: str) -> None:
    """`burst` leaves the jobs as a system's round meets them (never vacuumed), `vacuumed` as the ceiling
    had them until 2026-12-03; either way pgbench's claims and completions finish every job."""
    url = fresh_db(pg_server, f"ceiling_{insert}")
    res = ceiling.run(url, cpu.postmaster_pid(pg_server.data), "shipped", 3000, batch=1000, clients=2, insert=insert)
    assert res["jobs_per_s"] > 0 and res["db_cpu_us_per_job"] > 0 and res["wal_bytes_per_job"] > 0
    assert _vacuums(url) == (1 if insert == "vacuumed" else 0)


def test_progress_counts_two_updates_per_finished_job(pg_server: PostgresServer) -> None:
    url = fresh_db(pg_server, "burst_progress")
    burst.insert_burst(url, 10)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE metadata.river_job SET state = 'running', attempt = 1, attempted_at = now()"
            " WHERE id IN (SELECT id FROM metadata.river_job ORDER BY id LIMIT 4)"
        )
        conn.execute("UPDATE metadata.river_job SET state = 'completed', finalized_at = now() WHERE state = 'running'")
    # A backend sends its table statistics when it ends (or within a second while it lives).
    mon = burst.Monitor(url)
    try:
        deadline = time.monotonic() + 5
        while int(mon.one(burst.PROGRESS_SQL)) < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert int(mon.one(burst.PROGRESS_SQL)) // 2 == 4
    finally:
        mon.close()
