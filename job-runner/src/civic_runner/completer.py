"""Writes job outcomes in batches: one statement for everything that finished meanwhile.

Unlike River's ticker (every 50 ms), a flush starts as soon as the previous one ends, so at low
load an outcome is written within a millisecond and at high load batches grow by themselves
(group commit). While the process has more work than workers (`busy`), a write first gathers
up to `FULL_BATCH` outcomes for at most `GATHER` seconds: back-to-back flushes of a few hundred
rows cost the database more per job than full ones (bench/RESULTS.md, "Full batches under load"),
and at that load a job's outcome waiting 5 ms more is not what its latency is made of. Failed
writes are kept and retried: an outcome is never dropped while the process lives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool

from civic_runner import metrics
from civic_runner.deadlines import COMPLETE, bounded
from civic_runner.driver import Driver
from civic_runner.outcome import Completion

log = logging.getLogger("civic_runner.completer")

MAX_BATCH = 5000
BACKPRESSURE_AT = 10_000  # producers stop claiming while this many outcomes wait
FULL_BATCH = 1000  # outcomes a write gathers while busy: the bare statement's cost per job levels off here
GATHER = 0.005  # seconds a write waits at most for them


def gather_wait(backlog: int, busy: bool, waited: float) -> float:
    """Seconds a write should still wait for more outcomes before it starts (0: write now). Only while
    busy, so an idle or lightly loaded process writes each outcome at once."""
    if not busy or backlog >= FULL_BATCH:
        return 0.0
    return max(GATHER - waited, 0.0)


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


def earlier_try_landed(retried: bool, state_now: str, wrote: str) -> bool:
    """A skipped outcome that is our own: a failed write may have committed with only its reply lost,
    so a retry that finds the row already in the state it writes found its own earlier try."""
    return retried and state_now == wrote


# Told, once per batch for each (callback, state, written), how many outcomes ended so: counting per
# batch, not per job, keeps metrics off the per-job path.
OnWritten = Callable[[str, bool, int], None]


@dataclass(slots=True)
class Pending:
    completion: Completion
    on_written: OnWritten | None = None


class BatchCompleter:
    def __init__(self, pool: AsyncConnectionPool, driver: Driver, busy: Callable[[], bool] | None = None) -> None:
        self._pool = pool
        self._driver = driver
        self._busy = busy
        self._pending: list[Pending] = []
        self._writing: list[Pending] = []  # the batch being written now
        self.write_started: float | None = None  # monotonic, while a write waits for its answer
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        metrics.COMPLETER_BACKLOG.set_function(lambda: len(self._pending))  # read at scrape time

    @property
    def backlog(self) -> int:
        return len(self._pending)

    def holds(self) -> set[int]:
        """Jobs whose outcome waits to be written or is being written: still `running` in the table."""
        return {p.completion.job_id for p in (*self._pending, *self._writing)}

    def submit(self, completion: Completion, on_written: OnWritten | None = None) -> None:
        self._pending.append(Pending(completion, on_written))
        self._idle.clear()
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.05
        # Jobs of a failed write: it may have committed with only the reply lost, so a later try may find
        # the row already in the state it was writing (that is our own earlier try, not someone else).
        retried: set[int] = set()
        while True:
            if not self._pending:
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._busy is not None:
                await self._gather()
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            self._writing = batch
            self.write_started = time.monotonic()
            try:
                async with self._pool.connection() as conn:
                    result = await bounded(
                        self._driver.complete_many(conn, [p.completion for p in batch]), COMPLETE, "writing outcomes"
                    )
            except asyncio.CancelledError:
                self._pending[:0] = batch
                self._writing, self.write_started = [], None
                raise
            except Exception as exc:
                self._pending[:0] = batch
                self._writing, self.write_started = [], None
                retried.update(p.completion.job_id for p in batch)
                metrics.DB_ERRORS.labels("completer").inc()
                log.warning(
                    "could not write job outcomes; will retry",
                    extra={"jobs": len(batch), "error": str(exc).strip(), "retry_in": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._writing, self.write_started = [], None
            backoff = 0.05
            metrics.COMPLETER_BATCH.observe(len(batch))
            tally: dict[tuple[OnWritten, str, bool], int] = {}
            for p in batch:
                state, written = result.get(p.completion.job_id, ("missing", False))
                was_retry = p.completion.job_id in retried
                retried.discard(p.completion.job_id)
                if not written and earlier_try_landed(was_retry, state, p.completion.state.value):
                    log.info(
                        "outcome had been written by a try whose reply was lost",
                        extra={"job_id": p.completion.job_id, "state": state},
                    )
                    written = True
                elif not written:
                    level, note = skip_note(state)
                    log.log(level, note, extra={"job_id": p.completion.job_id, "state": state})
                if p.on_written is not None:
                    key = (p.on_written, state, written)
                    tally[key] = tally.get(key, 0) + 1
            for (on_written, state, written), n in tally.items():
                on_written(state, written, n)

    async def _gather(self) -> None:
        assert self._busy is not None
        started = time.monotonic()
        while not self._stopping:
            wait = gather_wait(len(self._pending), self._busy(), time.monotonic() - started)
            if wait <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), wait)
            except TimeoutError:
                return

    async def drain(self, timeout: float) -> bool:
        """Stop once everything submitted is written; False if that took longer than timeout."""
        self._stopping = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            return False
