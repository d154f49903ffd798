"""The runner process: wires producers, completer, notifier (LISTEN), insert watcher, elector and
maintenance together, and owns start-up checks, the HTTP endpoints and graceful shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import time
from dataclasses import replace
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from civic_runner import access, http, pooling
from civic_runner.completer import BatchCompleter
from civic_runner.config import RunnerConfig
from civic_runner.deadlines import connect_kwargs, stalled
from civic_runner.driver import Driver
from civic_runner.elector import Elector
from civic_runner.executor import STOP_REMOTE_CANCEL
from civic_runner.joblog import JobLogSampler
from civic_runner.maintenance import Maintainer
from civic_runner.notifier import Notifier
from civic_runner.producer import Producer
from civic_runner.registry import Registry
from civic_runner.watcher import InsertWatcher

log = logging.getLogger("civic_runner.runner")

SESSION_TIME_ZONE_SQL = "SET TIME ZONE 'UTC'"
STARTUP_RETRY_MAX = 10.0  # seconds between start-up checks, at most
STARTUP_REPEAT_LOG = 60.0  # an unchanged start-up problem is logged again this often


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class Runner:
    def __init__(self, cfg: RunnerConfig, registry: Registry, *, install_signals: bool = True) -> None:
        self.cfg = cfg
        self._install_signals = install_signals
        self.registry = registry
        self.driver = Driver(cfg.schema)
        self._stop = asyncio.Event()
        self._stopping = False
        self._heartbeat = time.monotonic()
        self.producers: dict[str, Producer] = {}
        self.notifier: Notifier | None = None
        self.watcher: InsertWatcher | None = None
        self.completer: BatchCompleter | None = None
        self.startup_problem: str | None = "starting: checking the database"
        self.pooled: bool | None = None  # CIVIC_DB_POOLER=auto's finding on DATABASE_URL's connections
        self.plan: pooling.ConnectionPlan | None = None
        self.job_log = JobLogSampler(cfg.job_log_rate)  # one per process: the rate is per process
        self._job_log_since = time.monotonic()

    def request_stop(self, reason: str = "requested") -> None:
        if not self._stop.is_set():
            log.info("stopping", extra={"reason": reason})
        self._stop.set()

    # -- probes -----------------------------------------------------------------------------------

    def healthy(self) -> tuple[bool, str]:
        age = time.monotonic() - self._heartbeat
        return (age < 10.0, f"event loop heartbeat {age:.1f}s ago")

    def ready(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "shutting down"
        if self.startup_problem:
            return False, self.startup_problem
        now = time.monotonic()
        bad = [q for q, p in self.producers.items() if not p.healthy or stalled(p.claim_started, now)]
        if bad:
            return False, f"database unreachable for queues {','.join(bad)}"
        if self.completer is not None and stalled(self.completer.write_started, now):
            return False, "database unreachable: job outcomes cannot be written"
        return bool(self.producers), "ok"

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> int:
        cfg = self.cfg
        # Before the first connection nobody knows whether LISTEN will have a connection of its own: keep
        # one for it unless it surely has none; resized once the plan is made (_plan).
        listen_maybe = not cfg.poll_only and (bool(cfg.database_listen_url) or cfg.db_pooler != "transaction")
        kwargs: dict[str, Any] = {"autocommit": True, **connect_kwargs(cfg.database_url)}
        if cfg.db_pooler == "transaction":
            kwargs["prepare_threshold"] = None  # a transaction pooler cannot keep prepared statements
        pool = AsyncConnectionPool(
            cfg.database_url,
            min_size=1,
            max_size=cfg.db_max_conns - (1 if listen_maybe else 0),
            kwargs=kwargs,
            configure=self._configure,
            open=False,
            name="civic-runner",
            reconnect_timeout=0,
        )
        await pool.open(wait=False)
        if self._install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, sig.name)
        # Probes answer at once: while the database is not usable, /readyz says why (and /healthz
        # stays up, so a liveness probe does not restart-loop a runner that waits for a GRANT).
        server = http.serve(cfg.http_host, cfg.http_port, self.healthy, self.ready) if cfg.http_port else None
        beat = asyncio.create_task(self._beat(), name="heartbeat")
        try:
            if not await self._wait_until_usable(pool):
                return 0  # stopped on request before any work: nothing to hand back
            plan = await self._plan(pool)
            return await self._serve(pool, plan)
        finally:
            beat.cancel()
            if server:
                server.shutdown()
            await pool.close()

    async def _configure(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Each new connection: the session's time zone is UTC, and (CIVIC_DB_POOLER=auto) one round trip
        finds whether a pooler stands between it and PostgreSQL, and if so it never prepares a statement.

        UTC because psycopg gives timestamptz values the session's zone, and only "UTC" maps to
        datetime.timezone.utc: any other name (Debian's default is "Etc/UTC") is a ZoneInfo, which costs
        about 1 µs per timestamp to load and more in every subtraction, three per claimed job. None of the
        runner's statements depends on the session's zone. PgBouncer keeps TimeZone per client, so the SET
        holds in transaction mode too."""
        await conn.execute(SESSION_TIME_ZONE_SQL, prepare=False)
        if self.cfg.db_pooler != "auto":
            return
        found = await pooling.detect(conn)
        if found:
            conn.prepare_threshold = None
        if self.pooled is not None and found != self.pooled:
            log.warning("DATABASE_URL's connections differ: some go through a pooler, some not")
        self.pooled = found or bool(self.pooled)

    async def _plan(self, pool: AsyncConnectionPool) -> pooling.ConnectionPlan:
        cfg = self.cfg
        db_pooled = pooling.pooled(cfg.db_pooler, self.pooled)
        plan = pooling.plan_connections(
            mode=cfg.db_pooler,
            database_url_pooled=db_pooled,
            database_url=cfg.database_url,
            listen_url=cfg.database_listen_url,
            poll_only=cfg.poll_only,
            watch_interval=cfg.insert_watch_interval,
        )
        if plan.listen_url and cfg.database_listen_url and cfg.db_pooler != "session":
            problem = await self._listen_url_problem(plan.listen_url)
            if problem:
                log.error(problem)
                plan = pooling.ConnectionPlan(None, False, plan.notes)
        for note in plan.notes:
            # Polling because of a pooler is worth a warning (latency); asked-for poll-only is not.
            log.log(logging.WARNING if plan.listen_url is None and not cfg.poll_only else logging.INFO, note)
        if plan.listen_url is None:
            # Producers poll control messages often when nothing is heard (CIVIC_POLL_ONLY's behaviour).
            self.cfg = replace(cfg, poll_only=True)
            await pool.resize(1, cfg.db_max_conns)
        self.plan = plan
        return plan

    @staticmethod
    async def _listen_url_problem(url: str) -> str | None:
        """DATABASE_LISTEN_URL must be a session of its own: a pooler there would lose LISTEN and the lock."""
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5) as conn:
                if await pooling.detect(conn):
                    return (
                        "DATABASE_LISTEN_URL goes through a connection pooler: LISTEN and the insert watcher need a "
                        "direct PostgreSQL connection (or CIVIC_DB_POOLER=session for a session pooler); polling only"
                    )
        except Exception as exc:  # unreachable now: the notifier retries, and checks again on each connect
            log.warning("DATABASE_LISTEN_URL not reachable yet", extra={"error": _first_line(exc)})
        return None

    async def _wait_until_usable(self, pool: AsyncConnectionPool) -> bool:
        """Check schema, River's version and the role's grants until they are right (False: asked to stop first)."""
        needs = access.river_needs(self.cfg.maintenance) + self.registry.needs()
        delay, said, said_at = 1.0, "", 0.0
        while not self._stop.is_set():
            try:
                async with pool.connection(timeout=5) as conn:
                    problem = access.diagnose(await access.probe(conn, self.cfg.schema, needs), self.cfg.schema)
            except Exception as exc:
                problem = f"database unreachable or failing: {_first_line(exc)}"
            if problem is None:
                if said:
                    log.info("database usable now", extra={"schema": self.cfg.schema})
                self.startup_problem = None
                return True
            self.startup_problem = problem
            if problem != said or time.monotonic() - said_at >= STARTUP_REPEAT_LOG:
                log.error("not ready: " + problem, extra={"schema": self.cfg.schema, "retry_s": delay})
                said, said_at = problem, time.monotonic()
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, STARTUP_RETRY_MAX)
        log.warning("stopped before the database was usable", extra={"problem": self.startup_problem})
        return False

    async def _serve(self, pool: AsyncConnectionPool, plan: pooling.ConnectionPlan) -> int:
        cfg = self.cfg
        listen = plan.listen_url is not None
        threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=sum(cfg.queues.values()) + 4, thread_name_prefix="worker"
        )
        completer = self.completer = BatchCompleter(pool, self.driver, busy=self._saturated)
        for queue, n in cfg.queues.items():
            self.producers[queue] = Producer(
                queue,
                n,
                cfg=cfg,
                pool=pool,
                driver=self.driver,
                registry=self.registry,
                completer=completer,
                threads=threads,
                job_log=self.job_log,
            )
        elector = Elector(pool, self.driver, cfg.client_id, cfg.elect_interval)
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(completer.run(), name="completer"),
            asyncio.create_task(self._summarize_jobs(), name="job-log-summary"),
        ]
        producer_tasks = [asyncio.create_task(p.run(), name=f"producer-{q}") for q, p in self.producers.items()]
        background: list[asyncio.Task[Any]] = []
        if plan.listen_url is not None:
            if plan.watcher:
                self.watcher = InsertWatcher(
                    cfg.schema,
                    cfg.insert_watch_interval,
                    self._wake_queues,
                    busy=self._saturated,
                )
            self.notifier = Notifier(
                plan.listen_url,
                cfg.schema,
                {
                    "river_insert": self._on_insert,
                    "river_control": self._on_control,
                    "river_leadership": elector.on_notification,
                },
                on_connect=self._wake_all,
                ticker=self.watcher,
                check_pooler=cfg.db_pooler != "session",
            )
            background.append(asyncio.create_task(self.notifier.run(), name="notifier"))
        elector_task = None
        if cfg.maintenance:
            elector_task = asyncio.create_task(elector.run(), name="elector")
            maint = Maintainer(cfg, pool, self.driver, elector, self.registry.kinds())
            background += [asyncio.create_task(svc(), name="maintenance") for svc in maint.services()]
        if cfg.exit_when_idle:
            background.append(asyncio.create_task(self._exit_when_idle(completer), name="idle-watch"))

        log.info(
            "runner started",
            extra={
                "client_id": cfg.client_id,
                "queues": cfg.queues,
                "schema": cfg.schema,
                "kinds": self.registry.kinds(),
                "listen": listen,
                "listen_via": "DATABASE_LISTEN_URL"
                if listen and cfg.database_listen_url
                else ("DATABASE_URL" if listen else None),
                "insert_watcher": self.watcher is not None,
                "db_pooler": cfg.db_pooler,
                "behind_pooler": pooling.pooled(cfg.db_pooler, self.pooled),
                "db_max_conns": cfg.db_max_conns,
            },
        )

        await self._stop.wait()
        self._stopping = True
        for p in self.producers.values():
            p.stop()
        await asyncio.gather(*producer_tasks, return_exceptions=True)
        running = sum(len(p.running) for p in self.producers.values())
        if running:
            log.info("waiting for running jobs", extra={"jobs": running, "grace_s": cfg.shutdown_grace})
            finished = await asyncio.gather(*(p.wait_finished(cfg.shutdown_grace) for p in self.producers.values()))
            if not all(finished):
                left = sum(len(p.running) for p in self.producers.values())
                log.warning("grace period over; returning unfinished jobs to the queue", extra={"jobs": left})
                for p in self.producers.values():
                    p.interrupt_all()
                await asyncio.gather(*(p.wait_finished(5) for p in self.producers.values()))
        if not await completer.drain(timeout=15):
            log.error("could not write every outcome before exit; the rescuer will recover those jobs")
        if elector_task:
            elector_task.cancel()
        for t in background + tasks:
            t.cancel()
        await asyncio.gather(*background, *tasks, *([elector_task] if elector_task else []), return_exceptions=True)
        if cfg.maintenance:
            await elector.resign()
        self._log_job_summary()
        threads.shutdown(wait=False, cancel_futures=True)
        log.info("runner stopped", extra={"client_id": cfg.client_id})
        return 0

    def _on_insert(self, payload: dict[str, Any]) -> None:
        self._wake_queues({str(payload.get("queue"))})

    def _on_control(self, payload: dict[str, Any]) -> None:
        action, queue = payload.get("action"), payload.get("queue")
        targets = [p for q, p in self.producers.items() if queue in (None, "", "*", q)]
        if action == "cancel" and isinstance(payload.get("job_id"), int):
            for p in targets:
                if p.cancel_job(payload["job_id"], STOP_REMOTE_CANCEL):
                    log.info("cancelling running job on request", extra={"job_id": payload["job_id"]})
        elif action in ("pause", "resume"):
            for p in targets:
                p.set_paused(action == "pause")

    def _saturated(self) -> bool:
        """Some queue has more work than workers (its last claim filled every free slot)."""
        return any(p.saturated for p in self.producers.values())

    def _wake_queues(self, queues: set[str]) -> None:
        for q in queues:
            p = self.producers.get(q)
            if p is not None:
                p.wake()

    def _wake_all(self) -> None:
        for p in self.producers.values():
            p.wake()

    def _log_job_summary(self) -> None:
        now = time.monotonic()
        summary = self.job_log.take_summary(now - self._job_log_since)
        self._job_log_since = now
        if summary is not None:
            log.info("jobs completed", extra=summary)

    async def _summarize_jobs(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.job_log_summary_interval)
            self._log_job_summary()

    async def _beat(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            await asyncio.sleep(1.0)

    async def _exit_when_idle(self, completer: BatchCompleter) -> None:
        while True:
            await asyncio.sleep(0.2)
            now = time.monotonic()
            idle = all(
                not p.running and p.healthy and now - p.last_found_work >= self.cfg.idle_exit_after
                for p in self.producers.values()
            )
            if idle and completer.backlog == 0:
                self.request_stop("queues drained (--exit-when-idle)")
                return
