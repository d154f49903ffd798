"""The runner process: wires producers, completer, listener, elector and maintenance together,
and owns start-up checks and graceful shutdown."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
import time
from typing import Any

from psycopg_pool import AsyncConnectionPool

from civic_runner import http
from civic_runner.completer import BatchCompleter
from civic_runner.config import RunnerConfig
from civic_runner.driver import Driver
from civic_runner.elector import Elector
from civic_runner.executor import STOP_REMOTE_CANCEL
from civic_runner.maintenance import Maintainer
from civic_runner.notifier import Notifier
from civic_runner.producer import Producer
from civic_runner.registry import Registry

log = logging.getLogger("civic_runner.runner")

MIN_SCHEMA_VERSION = 6  # what Civic OS ships; River's latest is 7
STARTUP_DB_WAIT = 60.0


class StartupError(Exception):
    pass


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
        bad = [q for q, p in self.producers.items() if not p.healthy]
        if bad:
            return False, f"database unreachable for queues {','.join(bad)}"
        return bool(self.producers), "ok"

    # -- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> int:
        cfg = self.cfg
        listen = not cfg.poll_only
        pool_size = cfg.db_max_conns - (1 if listen else 0)
        # PgBouncer in transaction mode cannot keep prepared statements: disable them with poll-only.
        kwargs: dict[str, Any] = {"autocommit": True}
        if cfg.poll_only:
            kwargs["prepare_threshold"] = None
        pool = AsyncConnectionPool(
            cfg.database_url,
            min_size=1,
            max_size=pool_size,
            kwargs=kwargs,
            open=False,
            name="civic-runner",
            reconnect_timeout=0,
        )
        await pool.open(wait=False)
        try:
            await self._check_schema(pool)
            return await self._serve(pool, listen)
        finally:
            await pool.close()

    async def _check_schema(self, pool: AsyncConnectionPool) -> None:
        deadline = time.monotonic() + STARTUP_DB_WAIT
        while True:
            try:
                async with pool.connection(timeout=5) as conn:
                    version = await self.driver.migration_version(conn)
                break
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise StartupError(f"database unreachable for {STARTUP_DB_WAIT:.0f}s: {exc}") from exc
                log.warning("waiting for the database", extra={"error": str(exc).strip()})
                await asyncio.sleep(2)
        if version < MIN_SCHEMA_VERSION:
            raise StartupError(
                f"River schema in {self.cfg.schema!r} is at version {version}, need >= {MIN_SCHEMA_VERSION}: "
                "run `civic-runner migrate` first"
            )

    async def _serve(self, pool: AsyncConnectionPool, listen: bool) -> int:
        cfg = self.cfg
        threads = concurrent.futures.ThreadPoolExecutor(
            max_workers=sum(cfg.queues.values()) + 4, thread_name_prefix="worker"
        )
        completer = BatchCompleter(pool, self.driver)
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
            )
        elector = Elector(pool, self.driver, cfg.client_id, cfg.elect_interval)
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(completer.run(), name="completer"),
            asyncio.create_task(self._beat(), name="heartbeat"),
        ]
        producer_tasks = [asyncio.create_task(p.run(), name=f"producer-{q}") for q, p in self.producers.items()]
        background: list[asyncio.Task[Any]] = []
        if listen:
            self.notifier = Notifier(
                cfg.database_url,
                cfg.schema,
                {
                    "river_insert": self._on_insert,
                    "river_control": self._on_control,
                    "river_leadership": elector.on_notification,
                },
                on_connect=self._wake_all,
            )
            background.append(asyncio.create_task(self.notifier.run(), name="notifier"))
        elector_task = None
        if cfg.maintenance:
            elector_task = asyncio.create_task(elector.run(), name="elector")
            maint = Maintainer(cfg, pool, self.driver, elector, self.registry.kinds())
            background += [asyncio.create_task(svc(), name="maintenance") for svc in maint.services()]
        if cfg.exit_when_idle:
            background.append(asyncio.create_task(self._exit_when_idle(completer), name="idle-watch"))

        if self._install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, sig.name)
        server = http.serve(cfg.http_host, cfg.http_port, self.healthy, self.ready) if cfg.http_port else None
        log.info(
            "runner started",
            extra={
                "client_id": cfg.client_id,
                "queues": cfg.queues,
                "schema": cfg.schema,
                "kinds": self.registry.kinds(),
                "listen": listen,
                "db_max_conns": cfg.db_max_conns,
            },
        )

        await self._stop.wait()
        self._stopping = True
        for p in self.producers.values():
            p.stop()
        await asyncio.gather(*producer_tasks, return_exceptions=True)
        running = [r.task for p in self.producers.values() for r in p.running.values()]
        if running:
            log.info("waiting for running jobs", extra={"jobs": len(running), "grace_s": cfg.shutdown_grace})
            _, pending = await asyncio.wait(running, timeout=cfg.shutdown_grace)
            if pending:
                log.warning("grace period over; returning unfinished jobs to the queue", extra={"jobs": len(pending)})
                for p in self.producers.values():
                    p.interrupt_all()
                await asyncio.wait(pending, timeout=5)
        if not await completer.drain(timeout=15):
            log.error("could not write every outcome before exit; the rescuer will recover those jobs")
        if elector_task:
            elector_task.cancel()
        for t in background + tasks:
            t.cancel()
        await asyncio.gather(*background, *tasks, *([elector_task] if elector_task else []), return_exceptions=True)
        if cfg.maintenance:
            await elector.resign()
        if server:
            server.shutdown()
        threads.shutdown(wait=False, cancel_futures=True)
        log.info("runner stopped", extra={"client_id": cfg.client_id})
        return 0

    def _on_insert(self, payload: dict[str, Any]) -> None:
        p = self.producers.get(str(payload.get("queue")))
        if p is not None:
            p.wake()

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

    def _wake_all(self) -> None:
        for p in self.producers.values():
            p.wake()

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
