"""One queue's fetch loop: claims up to the free worker slots and starts a task per job.

Wakes on a `river_insert` notification for its queue, on freed slots after a full fetch, and on
the poll interval (the only trigger in poll-only mode). Claims are spaced by fetch_cooldown. After
a full fetch the next claim waits for most slots to be free (`refill_ready`), or `REFILL_GATHER`
seconds after the first one freed: claims of a few hundred rows in a row cost the database more per
job than full ones.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg_pool import AsyncConnectionPool

from civic_runner import metrics
from civic_runner.completer import BACKPRESSURE_AT, BatchCompleter
from civic_runner.config import RunnerConfig
from civic_runner.deadlines import CHORE, CLAIM, bounded
from civic_runner.driver import Driver
from civic_runner.executor import STOP_REMOTE_CANCEL, STOP_SHUTDOWN, STOP_TIMEOUT, effective_timeout, execute
from civic_runner.job import Job, JobContext
from civic_runner.joblog import JobLogSampler
from civic_runner.lanes import Lanes
from civic_runner.outcome import Ending, Outcome, plan_completed, plan_completion
from civic_runner.registry import Registry

log = logging.getLogger("civic_runner.producer")


TIMEOUT_SWEEP_INTERVAL = 0.05
# A claim waits this long for a pool connection, not the pool's 30 s: during an outage /readyz turns
# within seconds, and a SIGTERM is not held up past the pod's grace period by a wait for a connection.
CLAIM_CONNECTION_TIMEOUT = 5.0
# After a claim failed, its rows may have been committed with only the reply lost: the claims of this
# long afterwards first give back such rows (a claim cut late may still commit a moment after the error).
LOST_CLAIM_WATCH = 15.0
POLL_ONLY_CONTROL_INTERVAL = 2.0  # without LISTEN the poll is the only way to hear of a cancel or pause
REFILL_GATHER = 0.005  # seconds a freed slot waits at most for others before a saturated queue claims


def refill_ready(free: int, max_workers: int) -> bool:
    """After a full fetch, whether enough slots are free to claim now rather than wait for more: nine
    tenths of them, rounded down (all but one below ten workers; one slot for a single worker)."""
    return free >= max(1, max_workers * 9 // 10)


def control_actions(
    paused: bool, queue_paused: bool | None, cancel_requested: Iterable[int], cancellable: Collection[int]
) -> tuple[bool | None, list[int]]:
    """What a control poll found that the producer has not acted on yet: the queue's new paused state
    (None: unchanged, or the queue has no river_queue row to say), and the running jobs to cancel."""
    new_paused = queue_paused if queue_paused is not None and queue_paused != paused else None
    return new_paused, sorted(set(cancel_requested) & set(cancellable))


def control_poll_interval(cfg: RunnerConfig) -> float:
    """Seconds between control polls (0: none). River polls about once a minute beside LISTEN, and its
    poll-only producers re-read their queue every 2 s."""
    if cfg.control_poll_interval <= 0:
        return 0.0
    return min(cfg.control_poll_interval, POLL_ONLY_CONTROL_INTERVAL) if cfg.poll_only else cfg.control_poll_interval


def control_poll_delay(interval: float, r: float) -> float:
    """Seconds to the next control poll, for r in [0, 1): spread over 80-100 % of the interval so that a
    fleet's polls do not line up, yet never longer than the interval, which thus bounds how late a cancel
    or pause whose notification was lost takes effect (River UI's pause: within a minute by default)."""
    return interval * (0.8 + 0.2 * r)


@dataclass(slots=True)
class Running:
    job: Job
    ctx: JobContext
    task: asyncio.Task[Any] | None = None  # the lane running the job; None while it waits for one
    deadline: float | None = None  # monotonic, from when the job started


class _KindMetrics:
    """Labelled metric children, looked up once per kind instead of once per job."""

    def __init__(self, kind: str, queue: str) -> None:
        self.duration = metrics.DURATION.labels(kind, queue)
        self._jobs: dict[str, Any] = {}
        self._kind, self._queue = kind, queue

    def written(self, state: str, was_running: bool, n: int) -> None:
        """The completer's report for a batch: n outcomes of this kind ended in `state` (skipped: not
        written, the row was no longer running our attempt)."""
        label = state if was_running else "skipped"
        c = self._jobs.get(label)
        if c is None:
            c = self._jobs[label] = metrics.JOBS.labels(self._kind, self._queue, label)
        c.inc(n)


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
        job_log: JobLogSampler,
    ) -> None:
        self.queue = queue
        self.max_workers = max_workers
        self._cfg = cfg
        self._pool = pool
        self._driver = driver
        self._registry = registry
        self._completer = completer
        self._threads = threads
        self._job_log = job_log  # the process's: its rate is per process, whatever the queues
        self._wake = asyncio.Event()
        self._stopping = False
        self.paused = False
        self.running: dict[int, Running] = {}  # claimed and not yet handed to the completer
        self._lanes: Lanes[Running] = Lanes(self._work, f"jobs-{queue}")
        self._none_running = asyncio.Event()
        self._none_running.set()
        self._refetch_on_free = False
        self._refill_timer: asyncio.TimerHandle | None = None
        self._last_fetch = 0.0
        self.last_found_work = time.monotonic()
        self.healthy = True
        self._born = datetime.now(UTC)  # claims before this are not ours (see give_back_lost_claims)
        self.claim_started: float | None = None  # monotonic, while a claim waits for its answer
        self._check_lost_until = 0.0  # monotonic; see LOST_CLAIM_WATCH
        self._lost_check_failed = False
        self._by_kind: dict[str, _KindMetrics] = {}
        # Read at scrape time: nothing to update per job.
        metrics.IN_FLIGHT.labels(queue).set_function(lambda: len(self.running))
        self._claim_lag = metrics.CLAIM_LAG.labels(queue)
        self._claims = metrics.CLAIMS.labels(queue)
        self._claimed = metrics.CLAIMED.labels(queue)

    def wake(self) -> None:
        self._wake.set()

    @property
    def saturated(self) -> bool:
        """The last claim filled every free slot: there is more work than workers."""
        return self._refetch_on_free

    def stop(self) -> None:
        """Stop claiming; running jobs go on."""
        self._stopping = True
        self._wake.set()

    def set_paused(self, paused: bool, via: str = "notification") -> None:
        self.paused = paused
        log.info("queue paused" if paused else "queue resumed", extra={"queue": self.queue, "via": via})
        self._wake.set()

    def cancel_job(self, job_id: int, reason: str = STOP_REMOTE_CANCEL) -> bool:
        r = self.running.get(job_id)
        if r is None:
            return False
        r.ctx.cancel(reason)
        if r.task is not None:  # else still queued: it ends with the stop's outcome when its lane takes it
            r.task.cancel()
        return True

    def interrupt_all(self) -> None:
        for job_id in list(self.running):
            self.cancel_job(job_id, STOP_SHUTDOWN)

    async def wait_finished(self, timeout: float) -> bool:
        """Wait until every claimed job has ended (its outcome handed to the completer); False on timeout."""
        try:
            await asyncio.wait_for(self._none_running.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def run(self) -> None:
        await self._register_queue()
        sweeper = asyncio.create_task(self._enforce_timeouts(), name=f"timeouts-{self.queue}")
        upkeep = asyncio.create_task(self._upkeep(), name=f"upkeep-{self.queue}")
        try:
            await self._fetch_loop()
        finally:
            sweeper.cancel()
            upkeep.cancel()

    async def _upkeep(self) -> None:
        """River's producer chores beside claiming: poll for cancel requests and the queue's paused state
        (notifications can be lost while the listener reconnects), and refresh the queue's river_queue row
        (River's queue cleaner deletes rows not updated for 24 h)."""
        poll_every = control_poll_interval(self._cfg)
        report_every = self._cfg.queue_report_interval if self._cfg.queue_report_interval > 0 else 0.0
        if not (poll_every or report_every):
            return
        now = time.monotonic()
        next_poll = now + control_poll_delay(poll_every, random.random()) if poll_every else float("inf")
        next_report = now + report_every if report_every else float("inf")
        while True:
            await asyncio.sleep(max(min(next_poll, next_report) - time.monotonic(), 0.0))
            now = time.monotonic()
            try:
                if now >= next_report:
                    next_report = now + report_every
                    await self._register_queue()
                if now >= next_poll:
                    next_poll = now + control_poll_delay(poll_every, random.random())
                    await self.poll_control()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                metrics.DB_ERRORS.labels("producer").inc()
                log.warning("queue upkeep failed", extra={"queue": self.queue, "error": str(exc).strip()})

    async def poll_control(self) -> None:
        """Act on cancel requests and pause/resume found in the tables (see control_actions)."""
        cancellable = [i for i, r in self.running.items() if not r.ctx.cancelled]
        async with self._pool.connection() as conn:
            queue_paused, requested = await bounded(
                self._driver.control_poll(conn, self.queue, cancellable), CHORE, "control poll"
            )
        new_paused, cancel = control_actions(self.paused, queue_paused, requested, cancellable)
        if new_paused is not None:
            metrics.CONTROL_POLL_ACTIONS.labels(self.queue, "pause" if new_paused else "resume").inc()
            self.set_paused(new_paused, via="poll")
        for job_id in cancel:
            if self.cancel_job(job_id, STOP_REMOTE_CANCEL):
                metrics.CONTROL_POLL_ACTIONS.labels(self.queue, "cancel").inc()
                log.info(
                    "cancelling running job on request", extra={"job_id": job_id, "queue": self.queue, "via": "poll"}
                )

    async def _enforce_timeouts(self) -> None:
        """One sweep for all deadlines instead of a timer per job (cheaper at thousands of jobs/s)."""
        while True:
            await asyncio.sleep(TIMEOUT_SWEEP_INTERVAL)
            if not self.running:
                continue
            now = time.monotonic()
            for job_id, r in list(self.running.items()):
                if r.deadline is not None and now >= r.deadline and not r.ctx.cancelled:
                    self.cancel_job(job_id, STOP_TIMEOUT)

    async def _fetch_loop(self) -> None:
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
            if self._refill_timer is not None:
                self._refill_timer.cancel()
                self._refill_timer = None
            # Readiness watches the whole claim: the wait for a connection, the give-back, the statement.
            self.claim_started = time.monotonic()
            try:
                async with self._pool.connection(timeout=CLAIM_CONNECTION_TIMEOUT) as conn:
                    if self._lost_check_failed or time.monotonic() < self._check_lost_until:
                        self._lost_check_failed = True
                        await self._give_back_lost_claims(conn)
                        self._lost_check_failed = False
                    jobs = await bounded(
                        self._driver.claim(conn, self.queue, limit, self._cfg.client_id), CLAIM, "claim"
                    )
            except Exception as exc:
                self.claim_started = None
                metrics.DB_ERRORS.labels("producer").inc()
                if self.healthy:
                    log.error("claim failed; retrying", extra={"queue": self.queue, "error": str(exc).strip()})
                self.healthy = False
                self._check_lost_until = time.monotonic() + LOST_CLAIM_WATCH
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                self._wake.set()
                continue
            self.claim_started = None
            if not self.healthy:
                log.info("claiming again", extra={"queue": self.queue})
            self.healthy = True
            backoff = 0.1
            self._claims.inc()
            if jobs:
                self._claimed.inc(len(jobs))
                self.last_found_work = time.monotonic()
            self._refetch_on_free = len(jobs) == limit
            if jobs:
                self._none_running.clear()
                self._lanes.submit([self._claimed_job(job) for job in jobs])

    def _slot_freed(self) -> None:
        if refill_ready(self.max_workers - len(self.running), self.max_workers):
            self._wake.set()
        elif self._refill_timer is None:
            self._refill_timer = asyncio.get_running_loop().call_later(REFILL_GATHER, self._refill_gathered)

    def _refill_gathered(self) -> None:
        self._refill_timer = None
        self._wake.set()

    async def _give_back_lost_claims(self, conn: Any) -> None:
        # Claims are made by this loop only, one at a time, and each claimed job is in self.running until
        # its outcome is handed to the completer: every row of ours not held by either was lost on the way.
        known = set(self.running) | self._completer.holds()
        ids = await bounded(
            self._driver.give_back_lost_claims(conn, self.queue, self._cfg.client_id, sorted(known), self._born),
            CLAIM,
            "giving back lost claims",
        )
        if ids:
            metrics.LOST_CLAIMS.labels(self.queue).inc(len(ids))
            log.warning(
                "gave back jobs whose claim reply was lost",
                extra={"queue": self.queue, "job_ids": ids[:50], "jobs": len(ids)},
            )

    async def _sleep_until_woken(self) -> None:
        interval = self._cfg.fetch_poll_interval
        jitter = random.uniform(0, max(interval * 0.1, 0.01))
        try:
            await asyncio.wait_for(self._wake.wait(), interval + jitter)
        except TimeoutError:
            pass
        self._wake.clear()

    async def _register_queue(self) -> None:
        """Upsert the queue's river_queue row (created_at once, updated_at now); take its paused state."""
        try:
            async with self._pool.connection() as conn:
                paused = await bounded(self._driver.queue_upsert(conn, self.queue), CHORE, "queue upsert")
        except Exception as exc:
            log.warning("could not register queue in river_queue", extra={"queue": self.queue, "error": str(exc)})
            return
        if paused != self.paused:
            self.set_paused(paused, via="river_queue")

    def _claimed_job(self, job: Job) -> Running:
        worker = self._registry.get(job.kind)
        timeout = effective_timeout(worker, self._cfg.job_timeout) if worker else None
        r = self.running[job.id] = Running(job, JobContext(job, timeout))
        return r

    def _kind_metrics(self, kind: str) -> _KindMetrics:
        m = self._by_kind.get(kind)
        if m is None:
            m = self._by_kind[kind] = _KindMetrics(kind, self.queue)
        return m

    async def _work(self, r: Running) -> None:
        job, ctx = r.job, r.ctx
        r.task = asyncio.current_task()
        if ctx.timeout:
            r.deadline = time.monotonic() + ctx.timeout
        started = time.time()
        t0 = time.perf_counter()
        self._claim_lag.observe(max(job.seconds_since_scheduled(started), 0.0))
        try:
            outcome = await execute(job, self._registry.get(job.kind), ctx, self._threads)
        except asyncio.CancelledError:
            outcome = Outcome(Ending.INTERRUPT, message=STOP_SHUTDOWN)
        except BaseException as exc:
            outcome = Outcome(Ending.ERROR, message=f"{type(exc).__name__}: {exc}")
        finally:
            self.running.pop(job.id, None)
            if not self.running:
                self._none_running.set()
            if self._refetch_on_free and not self._stopping:
                self._slot_freed()
        elapsed = time.perf_counter() - t0
        if outcome.ending is Ending.COMPLETED:
            completion = plan_completed(job, outcome)  # no times: spare the clock on the path of nearly every job
        else:
            completion = plan_completion(
                job,
                outcome,
                started_at=datetime.fromtimestamp(started, UTC),
                now=datetime.now(UTC),
                scheduler_interval=self._cfg.scheduler_interval,
            )
        km = self._kind_metrics(job.kind)
        km.duration.observe(elapsed)
        self._completer.submit(completion, km.written)
        if outcome.ending is Ending.COMPLETED:
            # At WARNING nothing is counted either: no summary line would be written.
            if log.isEnabledFor(logging.INFO) and self._job_log.admit(time.monotonic(), job.kind, self.queue):
                log.info("job completed", extra=self._log_fields(job, completion.state.value, elapsed))
        elif outcome.ending in (Ending.SNOOZE, Ending.INTERRUPT):
            log.info(f"job {outcome.ending.value}", extra=self._log_fields(job, completion.state.value, elapsed))
        else:
            log.warning(
                "job failed", extra={**self._log_fields(job, completion.state.value, elapsed), "error": outcome.message}
            )

    def _log_fields(self, job: Job, state: str, elapsed: float) -> dict[str, Any]:
        return {
            "job_id": job.id,
            "kind": job.kind,
            "queue": self.queue,
            "attempt": job.attempt,
            "outcome": state,
            "duration_ms": round(elapsed * 1000, 2),
        }
