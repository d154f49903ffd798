"""Leader-only maintenance with River's defaults: scheduler, rescuer, cleaner, queue cleaner and
reindexer (reindexer.py).

Each service is a loop that acts only while this process holds the lease, so in a mixed fleet
exactly one client (Go or Python) does maintenance at any time.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Collection, Coroutine
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from civic_runner import metrics
from civic_runner.config import RunnerConfig
from civic_runner.deadlines import CHORE, bounded
from civic_runner.driver import Driver
from civic_runner.elector import Elector
from civic_runner.outcome import error_entry_at
from civic_runner.reindexer import Reindexer, parse_index_names
from civic_runner.retry import next_retry_at

log = logging.getLogger("civic_runner.maintenance")

RESCUE_ERROR = "Stuck job rescued by JobRescuer"
SCHEDULE_BATCH = 10_000
RESCUE_BATCH = 1_000
CLEAN_BATCH = 10_000
QUEUE_RETENTION = 24 * 3600.0


def plan_rescue(
    row: dict[str, Any], known_kinds: Collection[str], now: datetime, rand: random.Random | None = None
) -> tuple[str, datetime | None]:
    """River's JobRescuer decision for one stuck running job: (new state, scheduled_at).

    `cancel_requested`: its metadata is an object holding `cancel_attempted_at` (decided in SQL).
    """
    if row["cancel_requested"]:
        return "cancelled", None
    if row["kind"] not in known_kinds:
        return "discarded", None
    if row["attempt"] < row["max_attempts"]:
        return "retryable", next_retry_at(now, row["n_errors"], rand)
    return "discarded", None


class Maintainer:
    def __init__(
        self,
        cfg: RunnerConfig,
        pool: AsyncConnectionPool,
        driver: Driver,
        elector: Elector,
        known_kinds: Collection[str],
    ) -> None:
        self._cfg = cfg
        self._pool = pool
        self._driver = driver
        self._elector = elector
        self._kinds = known_kinds

    def services(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        c = self._cfg
        services: list[Callable[[], Coroutine[Any, Any, None]]] = [
            lambda: self._every(c.scheduler_interval, "scheduler", self.schedule_once),
            lambda: self._every(c.rescuer_interval, "rescuer", self.rescue_once),
            lambda: self._every(c.cleaner_interval, "cleaner", self.clean_once),
            lambda: self._every(3600.0, "queue_cleaner", self.clean_queues_once),
        ]
        if c.reindexer:
            reindexer = Reindexer(
                self._pool,
                self._driver.schema,
                parse_index_names(c.reindex_indexes),
                c.reindex_timeout,
                lambda: self._elector.is_leader,
            )
            services.append(lambda: reindexer.serve(c.reindex_interval))
        return services

    async def _every(self, interval: float, name: str, fn: Callable[[], Awaitable[int]]) -> None:
        while True:
            await asyncio.sleep(interval)
            if not self._elector.is_leader:
                continue
            try:
                n = await bounded(fn(), CHORE * 2, name)
                if n:
                    log.info(f"{name} ran", extra={"service": name, "jobs": n})
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.DB_ERRORS.labels(name).inc()
                log.warning(f"{name} failed", extra={"service": name, "error": str(exc).strip()})

    async def schedule_once(self) -> int:
        async with self._pool.connection() as conn:
            moved = await self._driver.schedule(conn, self._cfg.scheduler_interval, SCHEDULE_BATCH)
            for queue in sorted({q for q, state in moved if state == "available"}):
                await self._driver.notify(conn, "river_insert", {"queue": queue})
        for _, state in moved:
            metrics.MAINTENANCE.labels("scheduler", state).inc()
        return len(moved)

    async def rescue_once(self) -> int:
        now = datetime.now(UTC)
        async with self._pool.connection() as conn:
            horizon = await self._driver.stuck_horizon(conn, self._cfg.rescue_after)
            rows = await self._driver.stuck_jobs(conn, horizon, RESCUE_BATCH)
            plans = []
            for row in rows:
                state, at = plan_rescue(row, self._kinds, now)
                # River dates a rescue entry at the rescue, not at the stuck run's start: the run may
                # have hung for hours, and "when was it given up" is what River UI and `jobs show` tell.
                entry = error_entry_at(now, row["attempt"], RESCUE_ERROR)
                plans.append((row["id"], state, at, entry))
                metrics.MAINTENANCE.labels("rescuer", state).inc()
            return await self._driver.rescue_many(conn, plans, horizon)

    async def clean_once(self) -> int:
        c = self._cfg
        total = 0
        async with self._pool.connection() as conn:
            for state, keep in (
                ("completed", c.completed_retention),
                ("cancelled", c.cancelled_retention),
                ("discarded", c.discarded_retention),
            ):
                if keep < 0:
                    continue
                n = await self._driver.clean(conn, state, keep, CLEAN_BATCH)
                metrics.MAINTENANCE.labels("cleaner", state).inc(n)
                total += n
        return total

    async def clean_queues_once(self) -> int:
        async with self._pool.connection() as conn:
            return await self._driver.clean_queues(conn, QUEUE_RETENTION)
