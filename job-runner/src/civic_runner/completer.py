"""Writes job outcomes in batches: one statement for everything that finished meanwhile.

Unlike River's ticker (every 50 ms), a flush starts as soon as the previous one ends, so at low
load an outcome is written within a millisecond and at high load batches grow by themselves
(group commit). Failed writes are kept and retried: an outcome is never dropped while the
process lives.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from civic_runner import metrics
from civic_runner.driver import Driver
from civic_runner.outcome import Completion

log = logging.getLogger("civic_runner.completer")

MAX_BATCH = 5000
BACKPRESSURE_AT = 10_000  # producers stop claiming while this many outcomes wait


def skip_note(state: str) -> tuple[int, str]:
    """How to report an outcome that was not written, by the row's state then: (log level, message).

    As River (0.48), rows found `pending` or `running` are skipped, not failures: someone moved the job to
    pending while it ran, or our run was rescued and another attempt is running now. Anything else (the
    job finalized by someone else, or deleted) is unexpected and worth a warning.
    """
    if state == "running":
        return logging.INFO, "outcome not written: the job is running another attempt (ours was rescued)"
    if state == "pending":
        return logging.INFO, "outcome not written: the job was moved to pending while it ran"
    if state == "missing":
        return logging.WARNING, "outcome not written: the job no longer exists"
    return logging.WARNING, "job was no longer running when its outcome was written; left as is"


@dataclass(frozen=True)
class Pending:
    completion: Completion
    on_written: Callable[[str, bool], None] | None = None


class BatchCompleter:
    def __init__(self, pool: AsyncConnectionPool, driver: Driver) -> None:
        self._pool = pool
        self._driver = driver
        self._pending: list[Pending] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def submit(self, completion: Completion, on_written: Callable[[str, bool], None] | None = None) -> None:
        self._pending.append(Pending(completion, on_written))
        metrics.COMPLETER_BACKLOG.set(len(self._pending))
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.05
        while True:
            if not self._pending:
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                async with self._pool.connection() as conn:
                    result = await self._driver.complete_many(conn, [p.completion for p in batch])
            except asyncio.CancelledError:
                self._pending[:0] = batch
                raise
            except Exception as exc:
                self._pending[:0] = batch
                metrics.DB_ERRORS.labels("completer").inc()
                log.warning(
                    "could not write job outcomes; will retry",
                    extra={"jobs": len(batch), "error": str(exc).strip(), "retry_in": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            metrics.COMPLETER_BATCH.observe(len(batch))
            metrics.COMPLETER_BACKLOG.set(len(self._pending))
            for p in batch:
                state, written = result.get(p.completion.job_id, ("missing", False))
                if not written:
                    level, note = skip_note(state)
                    log.log(level, note, extra={"job_id": p.completion.job_id, "state": state})
                if p.on_written is not None:
                    p.on_written(state, written)

    async def drain(self, timeout: float) -> bool:
        """Stop once everything submitted is written; False if that took longer than timeout."""
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
