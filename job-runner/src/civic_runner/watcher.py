"""The insert watcher: announces new jobs that were inserted without a NOTIFY.

Civic OS's enqueue triggers insert into river_job and send no notification, so a runner that only
LISTENs would find those jobs by its poll (1 s). Instead, one process per schema (whoever holds a
session advisory lock on its LISTEN connection) looks at the rows past the highest id it has seen,
every `insert_watch_interval` (2 ms by default; one aggregate row comes back, whatever the number of
rows), and sends River's own `river_insert` notification
for each queue that got an `available` job. Every runner (and River's Go clients) then wakes as if
the inserter had notified. The cost is one index-served query per tick for the whole fleet, not
per runner; the others retry the lock every few seconds.

A lower id can commit after a higher one (concurrent inserters): ids skipped over are kept as
"holes" and looked at again for `HOLE_TTL` seconds, so they are announced too (a rolled-back id
simply expires). Only a page with fewer rows than ids has its rows read one by one, to find them.

A burst (more than `PAGE` ids past the watermark, e.g. a bulk insert) is not read at all: the watcher
announces every queue that has an `available` job, found by a skip scan of River's fetching index (one
probe per queue, not per row), and moves its watermark to the top id. Walking a 100,000-job burst page
by page read each row after the runners had already updated it twice, and cost the database about a
fifth of its CPU with the database on a core of its own (bench/RESULTS.md). What the jump gives up: ids
in the jumped range get no holes, so one that commits after the jump (a concurrent inserter's) is not
announced; the queue's producers, busy with the burst, claim it as they go, or else their poll finds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection

from civic_runner.driver import channel, quote_ident

log = logging.getLogger("civic_runner.watcher")

PAGE = 1000  # rows read per tick at most: a burst is walked through, not read at once
HOLE_TTL = 2.0  # seconds a skipped id is looked for again
MAX_HOLES = 1000
LOCK_RETRY = 2.0  # seconds between attempts to become the watcher
RESYNC_EVERY = 10.0  # seconds between checks that ids did not go backwards (a sequence reset)
BUSY_FACTOR = 10  # tick this much slower while this process has more work than workers


def is_burst(seen: int, top_now: int) -> bool:
    """More ids past the watermark than a page holds: jump to the top instead of reading them."""
    return top_now - seen > PAGE


def next_wait(interval: float, page_full: bool, busy: bool) -> float:
    """Seconds until the next tick: at once while walking a burst, slower while this process is
    saturated (its producers refetch as slots free up, so wake-ups matter little, and the tick's
    round trips would take event-loop time from the jobs: -20 % throughput measured at 2 ms), else
    the interval."""
    if page_full:
        return 0.0
    return interval * BUSY_FACTOR if busy else interval


@dataclass
class Watermark:
    seen: int
    holes: dict[int, float] = field(default_factory=dict)  # id -> when it was first missed


@dataclass(frozen=True)
class Page:
    """What a tick found past the watermark, summarised by the database rather than sent row by row
    (a burst of 100,000 inserts cost the watcher a decoded row per job: 9 % of a busy runner's CPU)."""

    top: int  # the highest id found (the watermark itself when none)
    available: frozenset[str] = frozenset()  # queues with an `available` job among them
    gaps: tuple[tuple[int, int], ...] = ()  # ids skipped over between the watermark and top, inclusive ranges
    full: bool = False  # PAGE rows found: more may follow at once


def gaps_between(seen: int, ids: list[int]) -> tuple[tuple[int, int], ...]:
    """The ranges of ids (inclusive) missing between the watermark and each of the ascending ids."""
    gaps, expected = [], seen + 1
    for i in ids:
        if i > expected:
            gaps.append((expected, i - 1))
        expected = i + 1
    return tuple(gaps)


def advance(mark: Watermark, page: Page, hole_rows: list[tuple[int, str, str]], now: float) -> set[str]:
    """Take a tick's page and the rows (id, queue, state) found of earlier holes into the watermark;
    the queues to announce."""
    got = {r[0] for r in hole_rows}
    for hole in [h for h, since in mark.holes.items() if h in got or now - since > HOLE_TTL]:
        del mark.holes[hole]
    if page.top > mark.seen:
        for low, high in page.gaps:
            for missing in range(max(low, high + 1 - MAX_HOLES), high + 1):  # a huge gap: only its top matters
                mark.holes[missing] = now
        mark.seen = page.top
        if len(mark.holes) > MAX_HOLES:  # a burst of rollbacks: keep the newest
            for old in sorted(mark.holes)[: len(mark.holes) - MAX_HOLES]:
                del mark.holes[old]
    return set(page.available) | {queue for _, queue, state in hole_rows if state == "available"}


class InsertWatcher:
    """Runs on the notifier's connection between waits for notifications (the Notifier's `ticker`)."""

    def __init__(
        self,
        schema: str,
        interval: float,
        on_announce: Callable[[set[str]], None] | None = None,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        self.schema = schema
        self.interval = interval
        self._busy = busy
        # This process's own producers are woken directly, without waiting for the NOTIFY to come back.
        self._on_announce = on_announce
        s = quote_ident(schema)
        # One row whatever the page's size: the table's top id, then the page's count, top id and queues
        # with available jobs. When the table's top is more than a page away (a burst: is_burst), the page
        # is not read (a one-time filter in the plan) and those three come back empty.
        self._page_sql = (
            f"SELECT t.top, count(p.id), coalesce(max(p.id), %(seen)s::bigint),"
            f" coalesce(array_agg(DISTINCT p.queue) FILTER (WHERE p.state = 'available'), '{{}}')"
            f" FROM (SELECT coalesce(max(id), 0) AS top FROM {s}.river_job) t"
            f" LEFT JOIN LATERAL (SELECT id, queue, state FROM {s}.river_job"
            f" WHERE id > %(seen)s AND t.top - %(seen)s <= {PAGE} ORDER BY id LIMIT {PAGE}) p ON true"
            f" GROUP BY t.top"
        )
        # The queues with available jobs, by a skip scan of river_job_prioritized_fetching_index
        # (state, queue, ...): one index probe per queue, whatever the number of rows.
        self._available_queues_sql = (
            f"WITH RECURSIVE q(queue) AS ("
            f" (SELECT queue FROM {s}.river_job WHERE state = 'available' ORDER BY queue LIMIT 1)"
            f" UNION ALL SELECT (SELECT queue FROM {s}.river_job WHERE state = 'available' AND queue > q.queue"
            f" ORDER BY queue LIMIT 1) FROM q WHERE q.queue IS NOT NULL"
            f") SELECT queue FROM q WHERE queue IS NOT NULL"
        )
        # Only when the page has fewer rows than ids (some were skipped over: a lower id may commit later).
        # Read afresh, it may hold ids committed since the count: its rows then stand for the whole page.
        self._rows_sql = (
            f"SELECT id, queue, state::text FROM {s}.river_job WHERE id > %(seen)s AND id <= %(top)s ORDER BY id"
        )
        self._holes_sql = (
            f"SELECT id, queue, state::text FROM {s}.river_job WHERE id = ANY(%(holes)s::bigint[]) AND id <= %(seen)s"
        )
        self._max_sql = f"SELECT coalesce(max(id), 0) FROM {s}.river_job"
        self._notify_sql = "SELECT pg_notify(%s, json_build_object('queue', q)::text) FROM unnest(%s::text[]) AS q"
        self._lock_key = f"civic-runner insert watcher {schema}"
        self._channel = channel(schema, "river_insert")
        self.holding = False
        self.announced = 0
        self.jumps = 0  # bursts jumped over (is_burst)
        self._mark = Watermark(0)
        self._next_lock_try = 0.0
        self._next_resync = 0.0

    @property
    def wakes_own_producers(self) -> bool:
        return self._on_announce is not None

    def connection_lost(self) -> None:
        """The session ended, and the advisory lock with it."""
        if self.holding:
            log.info("insert watcher stopped: its connection was lost", extra={"schema": self.schema})
        self.holding = False
        self._next_lock_try = 0.0

    async def tick(self, conn: AsyncConnection[Any]) -> float:
        """One round; returns the seconds until the next one."""
        now = time.monotonic()
        if not self.holding:
            if now < self._next_lock_try:
                return self._next_lock_try - now
            self._next_lock_try = now + LOCK_RETRY
            cur = await conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self._lock_key,))
            row = await cur.fetchone()
            if not (row and row[0]):
                return LOCK_RETRY
            self.holding = True
            self._mark = Watermark(await self._max_id(conn))
            self._next_resync = now + RESYNC_EVERY
            log.info(
                "insert watcher: this process announces inserts made without NOTIFY",
                extra={"schema": self.schema, "interval_ms": self.interval * 1000, "from_id": self._mark.seen},
            )
            return self.interval
        if now >= self._next_resync:
            self._next_resync = now + RESYNC_EVERY
            top = await self._max_id(conn)
            if top < self._mark.seen:  # ids went backwards (the table was emptied and its sequence reset)
                self._mark = Watermark(top)
        seen = self._mark.seen
        hole_rows: list[tuple[int, str, str]] = []
        if self._mark.holes:
            cur = await conn.execute(self._holes_sql, {"holes": list(self._mark.holes), "seen": seen})
            hole_rows = [(int(r[0]), str(r[1]), str(r[2])) for r in await cur.fetchall()]
        cur = await conn.execute(self._page_sql, {"seen": seen})
        row = await cur.fetchone()
        assert row is not None  # grouped by the one top row: always one row
        top_now, count, top, available = int(row[0]), int(row[1]), int(row[2]), frozenset(row[3])
        gaps: tuple[tuple[int, int], ...] = ()
        if is_burst(seen, top_now):
            cur = await conn.execute(self._available_queues_sql)
            top, available = top_now, frozenset(str(r[0]) for r in await cur.fetchall())
            count = 0  # nothing was read: no gaps to find, and no page to walk at once
            self.jumps += 1
        elif top - seen > count:
            cur = await conn.execute(self._rows_sql, {"seen": seen, "top": top})
            rows = await cur.fetchall()
            gaps = gaps_between(seen, [int(r[0]) for r in rows])
            available = frozenset(str(r[1]) for r in rows if r[2] == "available")
        page = Page(top, available, gaps, count >= PAGE)
        queues = advance(self._mark, page, hole_rows, now)
        if queues:
            if self._on_announce:
                self._on_announce(queues)
            await conn.execute(self._notify_sql, (self._channel, sorted(queues)))
            self.announced += len(queues)
        return next_wait(self.interval, page.full, bool(self._busy and self._busy()))

    async def _max_id(self, conn: AsyncConnection[Any]) -> int:
        cur = await conn.execute(self._max_sql)
        row = await cur.fetchone()
        return int(row[0]) if row else 0
