"""Leader election on river_leader with River's rules, so a mixed Go/Python fleet elects one leader.

TTL = interval + 10 s. Followers bid every interval (+ up to 1 s jitter) and 0-50 ms after a
`resigned` notification; the leader re-elects every interval and resigns on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from civic_runner import metrics
from civic_runner.deadlines import CHORE, bounded
from civic_runner.driver import Driver

log = logging.getLogger("civic_runner.elector")

TTL_PADDING = 10.0


class Elector:
    def __init__(self, pool: AsyncConnectionPool, driver: Driver, client_id: str, interval: float = 5.0) -> None:
        self._pool = pool
        self._driver = driver
        self._id = client_id
        self._interval = interval
        self._term: datetime | None = None
        self._wake = asyncio.Event()

    @property
    def is_leader(self) -> bool:
        return self._term is not None

    @property
    def ttl(self) -> float:
        return self._interval + TTL_PADDING

    def on_notification(self, payload: dict[str, Any]) -> None:
        action = payload.get("action")
        if action == "resigned" and not self.is_leader:
            self._wake.set()
        elif action == "request_resign" and self.is_leader:
            asyncio.get_running_loop().create_task(self.resign())

    async def run(self) -> None:
        while True:
            try:
                # Bounded well inside the TTL: a leader whose re-election hangs on a dead connection must
                # stop acting as leader before the row expires and another process is elected.
                deadline = min(CHORE, self.ttl / 2)
                async with self._pool.connection(timeout=deadline) as conn:
                    if self._term is None:
                        self._term = await bounded(
                            self._driver.leader_attempt_elect(conn, self._id, self.ttl), deadline, "election"
                        )
                        if self._term is not None:
                            self._changed(True)
                    elif not await bounded(
                        self._driver.leader_attempt_reelect(conn, self._id, self._term, self.ttl),
                        deadline,
                        "re-election",
                    ):
                        self._term = None
                        self._changed(False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.DB_ERRORS.labels("elector").inc()
                log.warning("leader election failed", extra={"error": str(exc).strip()})
                if self._term is not None:
                    self._term = None
                    self._changed(False)
            delay = self._interval if self.is_leader else self._interval + random.uniform(0, 1)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), delay)
                await asyncio.sleep(random.uniform(0, 0.05))
            except TimeoutError:
                pass

    async def resign(self) -> None:
        term, self._term = self._term, None
        if term is None:
            return
        self._changed(False)
        try:
            # Bounded: at shutdown with the database gone, the leader row expires by itself (TTL).
            async with self._pool.connection(timeout=5.0) as conn:
                await bounded(self._driver.leader_resign(conn, self._id, term), 5.0, "resigning")
        except Exception as exc:
            log.warning("could not resign leadership", extra={"error": str(exc).strip()})

    def _changed(self, leader: bool) -> None:
        metrics.IS_LEADER.set(1 if leader else 0)
        log.info("gained leadership" if leader else "lost leadership", extra={"client_id": self._id})
