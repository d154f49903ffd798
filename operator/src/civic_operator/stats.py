"""Queue statistics from river_job: bounded, index-served queries, one connection pool per database.

Every count is capped (a LIMIT inside the count, at twice what could change a decision), so its cost
does not grow with the table or the backlog: `river_job_prioritized_fetching_index (state, queue,
priority, scheduled_at, id)` serves the available/running/scheduled counts and the oldest-job lookup;
`river_job_state_and_finalized_at_index` serves the completion rate, read only for pools that use
targetDrainSeconds, from at most the last RATE_SAMPLE completions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool

from civic_operator.scaling import QueueStats

log = logging.getLogger("civic_operator.stats")

RATE_WINDOW_SECONDS = 60
RATE_SAMPLE = 2_000


def depth_cap(max_replicas: int, target_per_replica: float) -> int:
    """Depth beyond max x target cannot change a decision: count no further (twice that, for display)."""
    return int(min(100_000, max(1_000, 2 * max_replicas * target_per_replica)))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def stats_sql(schema: str, with_rate: bool) -> str:
    """One round trip; each count is per queue (so `queue = q` is an index condition) and capped."""
    s = quote_ident(schema)
    rate = (
        f"""
      (SELECT row(count(*), extract(epoch FROM now() - min(finalized_at)))::text FROM (
         SELECT finalized_at FROM {s}.river_job
         WHERE state = 'completed' AND finalized_at > now() - make_interval(secs => %(window)s)
           AND queue = ANY(%(queues)s)
         ORDER BY finalized_at DESC LIMIT %(sample)s) f)"""
        if with_rate
        else "NULL::text"
    )
    return f"""
    SELECT
      (SELECT sum(n) FROM unnest(%(queues)s::text[]) q, LATERAL (
         SELECT count(*) AS n FROM (SELECT 1 FROM {s}.river_job
           WHERE state = 'available' AND queue = q LIMIT %(cap)s) x) y) AS available,
      (SELECT sum(n) FROM unnest(%(queues)s::text[]) q, LATERAL (
         SELECT count(*) AS n FROM (SELECT 1 FROM {s}.river_job
           WHERE state = 'running' AND queue = q LIMIT %(cap)s) x) y) AS running,
      (SELECT sum(n) FROM unnest(%(queues)s::text[]) q, unnest(ARRAY['scheduled', 'retryable']) st, LATERAL (
         SELECT count(*) AS n FROM (SELECT 1 FROM {s}.river_job
           WHERE state = st::{s}.river_job_state AND queue = q
             AND scheduled_at <= now() + make_interval(secs => %(soon)s) LIMIT %(cap)s) x) y) AS scheduled_soon,
      (SELECT extract(epoch FROM now() - min(oldest)) FROM (
         SELECT (SELECT scheduled_at FROM {s}.river_job
                 WHERE state = 'available' AND queue = q AND priority = p AND scheduled_at <= now()
                 ORDER BY scheduled_at LIMIT 1) AS oldest
         FROM unnest(%(queues)s::text[]) q, generate_series(1, 4) p) o) AS oldest_available_seconds,
      {rate} AS recent_completions
    """


def batch_sql(schema: str) -> str:
    """The per-queue counts of stats_sql for many pools' queues at once (no completion rate), one row per
    queue: the same index-served subqueries, each still with `queue = q` as an index condition."""
    s = quote_ident(schema)
    return f"""
    SELECT q,
      (SELECT count(*) FROM (SELECT 1 FROM {s}.river_job
         WHERE state = 'available' AND queue = q LIMIT %(cap)s) x) AS available,
      (SELECT count(*) FROM (SELECT 1 FROM {s}.river_job
         WHERE state = 'running' AND queue = q LIMIT %(cap)s) x) AS running,
      (SELECT count(*) FROM (SELECT 1 FROM {s}.river_job
         WHERE state = 'scheduled' AND queue = q
           AND scheduled_at <= now() + make_interval(secs => %(soon)s) LIMIT %(cap)s) x) AS scheduled,
      (SELECT count(*) FROM (SELECT 1 FROM {s}.river_job
         WHERE state = 'retryable' AND queue = q
           AND scheduled_at <= now() + make_interval(secs => %(soon)s) LIMIT %(cap)s) x) AS retryable,
      (SELECT extract(epoch FROM now() - min(oldest)) FROM (
         SELECT (SELECT scheduled_at FROM {s}.river_job
                 WHERE state = 'available' AND queue = q AND priority = p AND scheduled_at <= now()
                 ORDER BY scheduled_at LIMIT 1) AS oldest
         FROM generate_series(1, 4) p) o) AS oldest_available_seconds
    FROM unnest(%(queues)s::text[]) q
    """


@dataclass(frozen=True)
class QueueCounts:
    """One queue's counts, each capped at the batch's cap."""

    available: int
    running: int
    scheduled: int
    retryable: int
    oldest_available_seconds: float | None


def pool_stats(counts: dict[str, QueueCounts], queues: list[str], cap: int) -> QueueStats:
    """A pool's stats from its queues' rows of a batch: what stats_sql returns for the pool alone. The
    batch counted up to the largest cap of its pools; each count is capped again at this pool's, as
    stats_sql caps each queue's (and each state's) count."""
    rows = [counts[q] for q in queues if q in counts]  # a queue named twice counts twice, as in stats_sql
    oldest = [r.oldest_available_seconds for r in rows if r.oldest_available_seconds is not None]
    return QueueStats(
        available=sum(min(r.available, cap) for r in rows),
        running=sum(min(r.running, cap) for r in rows),
        scheduled_soon=sum(min(r.scheduled, cap) + min(r.retryable, cap) for r in rows),
        oldest_available_seconds=max(oldest) if oldest else None,
        completed_per_second=None,
    )


def completion_rate(raw: str | None) -> float | None:
    """Jobs/s from '(count,seconds spanned)': over the sample's own span when the sample is full."""
    if not raw:
        return None
    count_s, span_s = raw.strip("()").split(",")
    count = int(count_s)
    if count == 0:
        return 0.0
    span = float(span_s) if span_s else RATE_WINDOW_SECONDS
    return count / (span if count >= RATE_SAMPLE and span > 0 else RATE_WINDOW_SECONDS)


@dataclass
class _Waiting:
    queues: list[str]
    cap: int
    since: float
    result: asyncio.Future[tuple[QueueStats, float]]


class StatsSource:
    """Connection pools by database URL, shared by every pool that points at the same database.

    Pools that ask while their database's connections are busy are answered together: when many pools
    wake from the same insert notification, one statement counts all their queues (batch_sql) instead
    of one statement per pool queueing for the database's two connections. Pools that want the
    completion rate (targetDrainSeconds) keep their own statement: its sample is per pool.
    """

    def __init__(self, max_conns_per_db: int = 2) -> None:
        self._pools: dict[str, AsyncConnectionPool] = {}
        self._max = max_conns_per_db
        self._lock = asyncio.Lock()
        self._waiting: dict[tuple[str, str, float], list[_Waiting]] = {}
        self._batches: set[asyncio.Task[None]] = set()  # referenced until done: the loop keeps only weak ones

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
                    # Never prepared: the URL may be a PgBouncer in transaction mode, where a statement
                    # prepared on one server connection is missing on the next (`_pg3_0 does not exist`).
                    # One statement per batch of pools (or per pool) and round: planning it each time costs well under
                    # a millisecond.
                    kwargs={"autocommit": True, "connect_timeout": 5, "prepare_threshold": None},
                    name="civic-operator-stats",
                )
                await pool.open(wait=False)
                self._pools[url] = pool
            return pool

    async def fetch(
        self,
        url: str,
        schema: str,
        queues: list[str],
        scheduled_within: float,
        *,
        cap: int = 1_000,
        with_rate: bool = False,
    ) -> tuple[QueueStats, float]:
        """Stats and the query's wall time in seconds (waiting for a connection included)."""
        if not with_rate:
            return await self._batched(url, schema, queues, scheduled_within, cap)
        pool = await self._pool(url)
        t0 = time.perf_counter()
        async with pool.connection() as conn:
            cur = await conn.execute(
                stats_sql(schema, with_rate),
                {
                    "queues": queues,
                    "cap": cap,
                    "soon": scheduled_within,
                    "window": RATE_WINDOW_SECONDS,
                    "sample": RATE_SAMPLE,
                },
            )
            row: Any = await cur.fetchone()
        elapsed = time.perf_counter() - t0
        available, running, soon, oldest, recent = row
        return (
            QueueStats(
                available=int(available or 0),
                running=int(running or 0),
                scheduled_soon=int(soon or 0),
                oldest_available_seconds=float(oldest) if oldest is not None else None,
                completed_per_second=completion_rate(recent),
            ),
            elapsed,
        )

    async def _batched(
        self, url: str, schema: str, queues: list[str], scheduled_within: float, cap: int
    ) -> tuple[QueueStats, float]:
        key = (url, schema, scheduled_within)
        waiting = self._waiting.setdefault(key, [])
        mine = _Waiting(list(queues), cap, time.perf_counter(), asyncio.get_running_loop().create_future())
        waiting.append(mine)
        if len(waiting) == 1:  # the first asker runs the batch; later ones join it until it has a connection
            task = asyncio.create_task(self._run_batch(key), name=f"stats-{schema}")
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)
        return await mine.result

    async def _run_batch(self, key: tuple[str, str, float]) -> None:
        url, schema, soon = key
        batch: list[_Waiting] = []
        try:
            pool = await self._pool(url)
            async with pool.connection() as conn:
                # Taken only now: whoever asked while this waited for the connection is in the batch.
                batch = self._waiting.pop(key, [])
                queues = list(dict.fromkeys(q for w in batch for q in w.queues))
                cur = await conn.execute(
                    batch_sql(schema), {"queues": queues, "cap": max(w.cap for w in batch), "soon": soon}
                )
                rows: list[Any] = await cur.fetchall()
        except BaseException as exc:
            for w in batch or self._waiting.pop(key, []):
                if not w.result.done():
                    w.result.set_exception(exc if isinstance(exc, Exception) else RuntimeError("stats cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        counts = {
            str(q): QueueCounts(
                int(a or 0), int(r or 0), int(sc or 0), int(rt or 0), float(o) if o is not None else None
            )
            for q, a, r, sc, rt, o in rows
        }
        done = time.perf_counter()
        for w in batch:
            if not w.result.done():
                w.result.set_result((pool_stats(counts, w.queues, w.cap), done - w.since))

    @property
    def max_conns_per_db(self) -> int:
        return self._max

    @contextlib.asynccontextmanager
    async def connection(self, url: str) -> AsyncIterator[Any]:
        """A connection of the database's pool, for other reads of the same server (ledger.py)."""
        pool = await self._pool(url)
        async with pool.connection() as conn:
            yield conn

    async def close(self) -> None:
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()
