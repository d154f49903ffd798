"""Queue statistics from river_job: bounded, index-served queries, one connection pool per database.

Every count is capped (a LIMIT inside the count), so its cost does not grow with the table or the
backlog: `river_job_prioritized_fetching_index (state, queue, priority, scheduled_at, id)` serves the
available/running/scheduled counts and the oldest-job lookup; `river_job_state_and_finalized_at_index`
serves the completion rate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

from civic_operator.scaling import QueueStats

log = logging.getLogger("civic_operator.stats")

DEPTH_CAP = 100_000
RATE_WINDOW_SECONDS = 60
RATE_CAP = 100_000


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def stats_sql(schema: str) -> str:
    s = quote_ident(schema)
    return f"""
    SELECT
      (SELECT count(*) FROM (SELECT 1 FROM {s}.river_job
         WHERE state = 'available' AND queue = ANY(%(queues)s) LIMIT %(cap)s) a) AS available,
      (SELECT count(*) FROM (SELECT 1 FROM {s}.river_job
         WHERE state = 'running' AND queue = ANY(%(queues)s) LIMIT %(cap)s) r) AS running,
      (SELECT count(*) FROM (SELECT 1 FROM {s}.river_job
         WHERE state IN ('scheduled', 'retryable') AND queue = ANY(%(queues)s)
           AND scheduled_at <= now() + make_interval(secs => %(soon)s) LIMIT %(cap)s) c) AS scheduled_soon,
      (SELECT extract(epoch FROM now() - min(oldest)) FROM (
         SELECT (SELECT scheduled_at FROM {s}.river_job
                 WHERE state = 'available' AND queue = q AND priority = p AND scheduled_at <= now()
                 ORDER BY scheduled_at LIMIT 1) AS oldest
         FROM unnest(%(queues)s::text[]) q, generate_series(1, 4) p) o) AS oldest_available_seconds,
      (SELECT count(*) FROM (SELECT 1 FROM {s}.river_job
         WHERE state = 'completed' AND finalized_at > now() - make_interval(secs => %(window)s)
           AND queue = ANY(%(queues)s) LIMIT %(rate_cap)s) f) AS completed_recently
    """


class StatsSource:
    """Connection pools by database URL, shared by every pool that points at the same database."""

    def __init__(self, max_conns_per_db: int = 2) -> None:
        self._pools: dict[str, AsyncConnectionPool] = {}
        self._max = max_conns_per_db
        self._lock = asyncio.Lock()

    async def _pool(self, url: str) -> AsyncConnectionPool:
        async with self._lock:
            pool = self._pools.get(url)
            if pool is None:
                pool = AsyncConnectionPool(
                    url,
                    min_size=0,
                    max_size=self._max,
                    open=False,
                    timeout=5,
                    kwargs={"autocommit": True, "connect_timeout": 5},
                    name="civic-operator-stats",
                )
                await pool.open(wait=False)
                self._pools[url] = pool
            return pool

    async def fetch(
        self, url: str, schema: str, queues: list[str], scheduled_within: float
    ) -> tuple[QueueStats, float]:
        """Stats and the query's wall time in seconds."""
        pool = await self._pool(url)
        t0 = time.perf_counter()
        async with pool.connection() as conn:
            cur = await conn.execute(
                stats_sql(schema),
                {
                    "queues": queues,
                    "cap": DEPTH_CAP,
                    "soon": scheduled_within,
                    "window": RATE_WINDOW_SECONDS,
                    "rate_cap": RATE_CAP,
                },
            )
            row: Any = await cur.fetchone()
        elapsed = time.perf_counter() - t0
        available, running, soon, oldest, completed = row
        return (
            QueueStats(
                available=int(available),
                running=int(running),
                scheduled_soon=int(soon),
                oldest_available_seconds=float(oldest) if oldest is not None else None,
                completed_per_second=int(completed) / RATE_WINDOW_SECONDS,
            ),
            elapsed,
        )

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
