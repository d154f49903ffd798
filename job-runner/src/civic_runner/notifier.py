"""One LISTEN connection per process for River's topics (`<schema>.river_insert`, ...).

Reconnects with backoff when the connection drops (e.g. PostgreSQL restarts); after a reconnect
`on_connect` runs so producers fetch at once, since notifications sent meanwhile are lost.

A `ticker` (the insert watcher) shares the connection: it runs between waits for notifications
(psycopg keeps notifications that arrive meanwhile for the next wait) and says how long to wait.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import psycopg

from civic_runner import pooling
from civic_runner.deadlines import CHORE, LISTEN_KEEPALIVE, bounded, connect_kwargs
from civic_runner.driver import channel, quote_ident

log = logging.getLogger("civic_runner.notifier")

Handler = Callable[[dict[str, Any]], None]


class Ticker(Protocol):
    async def tick(self, conn: psycopg.AsyncConnection[Any]) -> float: ...

    @property
    def wakes_own_producers(self) -> bool:
        """Its announcements wake this process's producers directly, without the round trip."""
        ...

    def connection_lost(self) -> None: ...


def is_own_announcement(sender_pid: int, own_pid: int, ticker_wakes_directly: bool) -> bool:
    """A notification this connection sent itself: the insert watcher's announcement, whose queues'
    producers in this process it already woke directly. Dispatching it again would only cost each
    of them a second, empty claim."""
    return ticker_wakes_directly and sender_pid == own_pid


class Notifier:
    def __init__(
        self,
        conninfo: str,
        schema: str,
        handlers: dict[str, Handler],
        on_connect: Callable[[], None] | None = None,
        ticker: Ticker | None = None,
        check_pooler: bool = True,
    ) -> None:
        self._conninfo = conninfo
        self._schema = schema
        self._handlers = handlers
        self._on_connect = on_connect
        self._ticker = ticker
        self._check_pooler = check_pooler
        self.connected = False
        self.refused: str | None = None  # why it stopped for good (its URL goes through a pooler)

    async def run(self) -> None:
        backoff = 0.1
        first = True
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, **connect_kwargs(self._conninfo)
                )
            except Exception as exc:
                if first or backoff >= 5.0:
                    log.warning("listener cannot connect; polling only until it can", extra={"error": str(exc).strip()})
                first = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            try:
                async with conn:
                    if self._check_pooler and await bounded(pooling.detect(conn), CHORE, "pooler check"):
                        self.refused = (
                            "the listen connection goes through a connection pooler: LISTEN and the insert watcher "
                            "need a direct PostgreSQL URL (DATABASE_LISTEN_URL); polling only"
                        )
                        log.error(self.refused)
                        return
                    for topic in self._handlers:
                        await bounded(
                            conn.execute(f"LISTEN {quote_ident(channel(self._schema, topic))}"), CHORE, "LISTEN"
                        )
                    self.connected = True
                    if not first:
                        log.info("listener reconnected")
                    first = False
                    backoff = 0.1
                    if self._on_connect:
                        self._on_connect()
                    own_pid = conn.info.backend_pid
                    skip_own = self._ticker is not None and self._ticker.wakes_own_producers
                    while True:
                        # A LISTEN connection only reads: through a dead path it would wait for ever without
                        # an error. The ticker's queries and, without one, a keepalive query find out.
                        if self._ticker:
                            wait = await bounded(self._ticker.tick(conn), CHORE, "insert watcher")
                        else:
                            wait = LISTEN_KEEPALIVE
                        async for n in conn.notifies(timeout=wait):
                            if not is_own_announcement(n.pid, own_pid, skip_own):
                                self._dispatch(n.channel, n.payload)
                        if not self._ticker:
                            await bounded(conn.execute("SELECT 1"), CHORE, "listener keepalive")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listener connection lost; reconnecting", extra={"error": str(exc).strip()})
            finally:
                self.connected = False
                if self._ticker:
                    self._ticker.connection_lost()
            await asyncio.sleep(backoff)

    def _dispatch(self, chan: str, payload: str) -> None:
        prefix = f"{self._schema}."
        topic = chan[len(prefix) :] if chan.startswith(prefix) else chan
        handler = self._handlers.get(topic)
        if handler is None:
            return
        try:
            data = json.loads(payload) if payload else {}
        except json.JSONDecodeError:
            log.warning("ignoring malformed notification", extra={"channel": chan, "payload": payload[:200]})
            return
        if isinstance(data, dict):
            handler(data)
