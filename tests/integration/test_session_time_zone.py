"""The runner's sessions are in UTC whatever the database's TimeZone (runner._configure): psycopg then
gives timestamps datetime.timezone.utc instead of a ZoneInfo, which made every claimed job slower to decode
and to subtract. The instants themselves must not change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

import pytest
from civic_runner import Job, JobContext, Registry

from devenv.pg import PostgresServer
from devenv.pgbouncer import PgBouncer
from tests.support.harness import InProcessRunner, insert, job, migrate, query, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


def through_transaction_pgbouncer(stack: ExitStack, pg_server: PostgresServer, db_url: str) -> str:
    """PgBouncer hands each transaction any server connection; it must carry the client's TimeZone along.
    Two server connections for the runner's four, so they do change hands."""
    bouncer = PgBouncer(pg_server.port, pool_mode="transaction", pool_size=2)
    bouncer.start()
    stack.callback(bouncer.destroy)
    return bouncer.url(db_url.rsplit("/", 1)[1])


@pytest.mark.parametrize("path", ["direct", "direct-session-mode", "pgbouncer-transaction"])
def test_claimed_jobs_carry_utc_whatever_the_servers_time_zone(
    db_url: str, path: str, pg_server: PostgresServer, stack: ExitStack
) -> None:
    migrate(db_url)
    [[dbname]] = query(db_url, "SELECT current_database()")
    # A zone with an offset, so a wrong conversion would show in the instants, not only in tzinfo.
    query(db_url, f"ALTER DATABASE {dbname} SET timezone = 'America/New_York'")
    [[zone]] = query(db_url, "SHOW timezone")
    assert zone == "America/New_York"

    seen: list[tuple[int, datetime, datetime]] = []
    kinds = Registry()

    @kinds.kind("see_times")
    async def see_times(j: Job, ctx: JobContext) -> None:
        seen.append((j.id, j.scheduled_at, j.attempted_at))

    settings: dict[str, Any] = {"db_pooler": "session" if path == "direct-session-mode" else "auto"}
    runner_url = db_url
    if path == "pgbouncer-transaction":
        runner_url = through_transaction_pgbouncer(stack, pg_server, db_url)
        settings["database_listen_url"] = db_url
    ids = insert(db_url, "see_times", {}, count=3)
    with InProcessRunner(runner_url, kinds, **settings):
        wait_for(lambda: len(seen) == 3, what="3 jobs seen")
        wait_for(lambda: all(job(db_url, i)["state"] == "completed" for i in ids), what="completed")

    for jid, scheduled_at, attempted_at in seen:
        row: dict[str, Any] = job(db_url, jid)
        assert scheduled_at.tzinfo is UTC and attempted_at.tzinfo is UTC
        assert scheduled_at == row["scheduled_at"] and attempted_at == row["attempted_at"]
        assert row["finalized_at"] >= attempted_at >= scheduled_at
