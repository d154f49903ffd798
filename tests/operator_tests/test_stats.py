"""Queue stats queries against a real PostgreSQL with River's schema."""

from __future__ import annotations

import asyncio

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
