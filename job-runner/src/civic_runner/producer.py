"""One queue's fetch loop: claims up to the free worker slots and starts a task per job.

Wakes on a `river_insert` notification for its queue, on a freed slot after a full fetch, and on
the poll interval (the only trigger in poll-only mode). Claims are spaced by fetch_cooldown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from psycopg_pool import AsyncConnectionPool

from civic_runner import metrics
from civic_runner.completer import BACKPRESSURE_AT, BatchCompleter
from civic_runner.config import RunnerConfig
from civic_runner.driver import Driver
from civic_runner.executor import STOP_REMOTE_CANCEL, STOP_SHUTDOWN, effective_timeout, execute
from civic_runner.job import Job, JobContext
from civic_runner.outcome import Ending, Outcome, plan_completion
from civic_runner.registry import Registry

log = logging.getLogger("civic_runner.producer")


@dataclass
class Running:
    job: Job
    ctx: JobContext
    task: asyncio.Task[None]


class Producer:
    def __init__(
        self,
        queue: str,
        max_workers: int,
        *,
        cfg: RunnerConfig,
        pool: AsyncConnectionPool,
        driver: Driver,
        registry: Registry,
        completer: BatchCompleter,
        threads: concurrent.futures.Executor,
    ) -> None:
        self.queue = queue
        self.max_workers = max_workers
        self._cfg = cfg
        self._pool = pool
        self._driver = driver
        self._registry = registry
        self._completer = completer
        self._threads = threads
        self._wake = asyncio.Event()
        self._stopping = False
        self.paused = False
        self.running: dict[int, Running] = {}
        self._refetch_on_free = False
        self._last_fetch = 0.0
        self.last_found_work = time.monotonic()
        self.healthy = True

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop claiming; running jobs go on."""
        self._stopping = True
        self._wake.set()

    def set_paused(self, paused: bool) -> None:
        self.paused = paused
        log.info("queue paused" if paused else "queue resumed", extra={"queue": self.queue})
        self._wake.set()

    def cancel_job(self, job_id: int, reason: str = STOP_REMOTE_CANCEL) -> bool:
        r = self.running.get(job_id)
        if r is None:
            return False
        r.ctx.cancel(reason)
        r.task.cancel()
        return True

    def interrupt_all(self) -> None:
        for job_id in list(self.running):
            self.cancel_job(job_id, STOP_SHUTDOWN)

    async def run(self) -> None:
        await self._register_queue()
        backoff = 0.1
        while not self._stopping:
            await self._sleep_until_woken()
            if self._stopping:
                break
            if self.paused:
                continue
            wait = self._cfg.fetch_cooldown - (time.monotonic() - self._last_fetch)
            if wait > 0:
                await asyncio.sleep(wait)
            limit = self.max_workers - len(self.running)
            if limit <= 0 or self._completer.backlog >= BACKPRESSURE_AT:
                self._refetch_on_free = True
                continue
            self._last_fetch = time.monotonic()
            try:
                async with self._pool.connection() as conn:
                    jobs = await self._driver.claim(conn, self.queue, limit, self._cfg.client_id)
            except Exception as exc:
                metrics.DB_ERRORS.labels("producer").inc()
                if self.healthy:
                    log.error("claim failed; retrying", extra={"queue": self.queue, "error": str(exc).strip()})
                self.healthy = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()
                continue
            if not self.healthy:
                log.info("claiming again", extra={"queue": self.queue})
            self.healthy = True
            backoff = 0.1
            metrics.CLAIMS.labels(self.queue).inc()
            if jobs:
                metrics.CLAIMED.labels(self.queue).inc(len(jobs))
                self.last_found_work = time.monotonic()
            self._refetch_on_free = len(jobs) == limit
            for job in jobs:
                self._start(job)

    async def _sleep_until_woken(self) -> None:
        interval = self._cfg.fetch_poll_interval
        jitter = random.uniform(0, max(interval * 0.1, 0.01))
        try:
            await asyncio.wait_for(self._wake.wait(), interval + jitter)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _register_queue(self) -> None:
        try:
            async with self._pool.connection() as conn:
                self.paused = await self._driver.queue_upsert(conn, self.queue)
        except Exception as exc:
            log.warning("could not register queue in river_queue", extra={"queue": self.queue, "error": str(exc)})

    def _start(self, job: Job) -> None:
        worker = self._registry.get(job.kind)
        timeout = effective_timeout(worker, self._cfg.job_timeout) if worker else None
        ctx = JobContext(job, timeout)
        task = asyncio.create_task(self._work(job, ctx), name=f"job-{job.id}")
        self.running[job.id] = Running(job, ctx, task)
        metrics.IN_FLIGHT.labels(self.queue).inc()

    async def _work(self, job: Job, ctx: JobContext) -> None:
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        metrics.CLAIM_LAG.labels(self.queue).observe(max((started - job.scheduled_at).total_seconds(), 0.0))
        try:
            outcome = await execute(job, self._registry.get(job.kind), ctx, self._threads)
        except asyncio.CancelledError:
            outcome = Outcome(Ending.INTERRUPT, message=STOP_SHUTDOWN)
        except BaseException as exc:
            outcome = Outcome(Ending.ERROR, message=f"{type(exc).__name__}: {exc}")
        finally:
            self.running.pop(job.id, None)
            metrics.IN_FLIGHT.labels(self.queue).dec()
            if self._refetch_on_free and not self._stopping:
                self._wake.set()
        elapsed = time.perf_counter() - t0
        completion = plan_completion(
            job,
            outcome,
            started_at=started,
            now=datetime.now(UTC),
            scheduler_interval=self._cfg.scheduler_interval,
        )
        metrics.DURATION.labels(job.kind, self.queue).observe(elapsed)
        label = completion.state.value

        def written(state: str, was_running: bool) -> None:
            metrics.JOBS.labels(job.kind, self.queue, state if was_running else "skipped").inc()

        self._completer.submit(completion, written)
        extra = {
            "job_id": job.id,
            "kind": job.kind,
            "queue": self.queue,
            "attempt": job.attempt,
            "outcome": label,
            "duration_ms": round(elapsed * 1000, 2),
        }
        if outcome.ending is Ending.COMPLETED:
            log.info("job completed", extra=extra)
        elif outcome.ending in (Ending.SNOOZE, Ending.INTERRUPT):
            log.info(f"job {outcome.ending.value}", extra=extra)
        else:
            log.warning("job failed", extra={**extra, "error": outcome.message})
