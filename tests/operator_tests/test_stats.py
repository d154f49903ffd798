"""Queue stats queries against a real PostgreSQL with River's schema."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import psycopg
import pytest
from civic_operator.stats import StatsSource

from tests.support.harness import migrate

pytestmark = pytest.mark.integration


def test_counts_by_state_and_queue(db_url: str) -> None:
    migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = [
            ("thumbnails", "available", "now() - interval '30 seconds'", 5),
            ("thumbnails", "available", "now() + interval '1 hour'", 2),  # River's short retries: counted as work
            ("thumbnails", "running", "now()", 3),
            ("thumbnails", "scheduled", "now() + interval '5 seconds'", 4),
            ("thumbnails", "retryable", "now() + interval '1 hour'", 6),
            ("thumbnails", "completed", "now()", 7),
            ("other", "available", "now() - interval '1 hour'", 9),
        ]
        for queue, state, at, n in rows:
            conn.execute(
                f"""INSERT INTO metadata.river_job (kind, args, queue, state, scheduled_at, attempted_at, finalized_at)
                    SELECT 'k', '{{}}', %s, %s::metadata.river_job_state, {at},
                           CASE WHEN %s IN ('running', 'completed') THEN now() END,
                           CASE WHEN %s = 'completed' THEN now() END
                    FROM generate_series(1, %s)""",
                (queue, state, state, state, n),
            )

    async def go() -> None:
        src = StatsSource()
        try:
            s, seconds = await src.fetch(db_url, "metadata", ["thumbnails"], scheduled_within=10, with_rate=True)
            assert (s.available, s.running, s.scheduled_soon) == (7, 3, 4)
            assert s.oldest_available_seconds is not None and 29 <= s.oldest_available_seconds < 60
            assert s.completed_per_second == pytest.approx(7 / 60)
            assert seconds < 1
            both, _ = await src.fetch(db_url, "metadata", ["thumbnails", "other"], scheduled_within=0)
            assert both.available == 16 and both.scheduled_soon == 0 and both.completed_per_second is None
            capped, _ = await src.fetch(db_url, "metadata", ["thumbnails", "other"], scheduled_within=0, cap=4)
            assert capped.available == 8  # 4 per queue
            assert both.oldest_available_seconds is not None and both.oldest_available_seconds >= 3600
        finally:
            await src.close()

    asyncio.run(go())


def test_unreachable_database_raises(db_url: str) -> None:
    async def go() -> None:
        src = StatsSource()
        try:
            with pytest.raises(Exception):  # noqa: B017 - any connection error; the caller degrades
                await src.fetch("postgresql://nobody@127.0.0.1:1/x", "metadata", ["q"], 0)
        finally:
            await src.close()

    asyncio.run(go())


def test_pools_asking_at_once_share_one_statement_with_the_same_answers(db_url: str) -> None:
    """Many pools waking together (one insert notification): answered by batches, each pool exactly what
    its own statement says, caps included."""
    migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO metadata.river_job (kind, args, queue, state, scheduled_at)
               SELECT 'k', '{}', 'q' || (i % 7), (ARRAY['available', 'running', 'scheduled', 'retryable'])[1 + i % 4]
                      ::metadata.river_job_state, now() - (i % 5) * interval '1 minute'
               FROM generate_series(1, 400) i"""
        )
    asks = [([f"q{i % 7}", f"q{(i * 3) % 8}"], 4 + i % 30) for i in range(40)]

    async def go() -> tuple[list[object], list[object], int]:
        src = StatsSource()
        executed = 0
        try:
            alone = [
                (await src.fetch(db_url, "metadata", queues, 300, cap=cap, with_rate=True))[0] for queues, cap in asks
            ]
            before = await _statements(src, db_url)
            together = await asyncio.gather(*(src.fetch(db_url, "metadata", q, 300, cap=c) for q, c in asks))
            executed = await _statements(src, db_url) - before
        finally:
            await src.close()
        return [dataclasses.replace(s, completed_per_second=None) for s in alone], [s for s, _ in together], executed

    alone, together, executed = asyncio.run(go())
    assert [s.oldest_available_seconds for s in together] == pytest.approx(
        [s.oldest_available_seconds for s in alone], abs=5
    )  # read a moment apart
    without_age = [dataclasses.replace(s, oldest_available_seconds=None) for s in together]
    assert without_age == [dataclasses.replace(s, oldest_available_seconds=None) for s in alone]
    assert executed < len(asks) / 4  # batched: a handful of statements for 40 pools


async def _statements(src: StatsSource, url: str) -> int:
    async with src.connection(url) as conn:
        cur = await conn.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()")
        row = await cur.fetchone()
        return int(row[0]) - 1  # not counting this one


def test_the_batch_statement_is_index_served(db_url: str) -> None:
    """Its cost must not grow with river_job: every count and the oldest-job lookup go through River's
    indexes (by state and queue), never a scan of the table."""
    from civic_operator.stats import batch_sql

    migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO metadata.river_job (kind, args, queue, state, finalized_at)
               SELECT 'k', '{}', 'q' || (i % 50), 'completed', now() FROM generate_series(1, 20000) i"""
        )
        conn.execute("ANALYZE metadata.river_job")
        sql = "EXPLAIN (FORMAT JSON) " + batch_sql("metadata")
        row = conn.execute(sql, {"queues": [f"q{i}" for i in range(40)], "cap": 1000, "soon": 5}).fetchone()
    assert row is not None
    plan = json.dumps(row[0])
    assert "Seq Scan" not in plan.replace('"Function Scan"', ""), plan
    assert "river_job_prioritized_fetching_index" in plan
