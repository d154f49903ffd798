"""LISTEN on each database's `<schema>.river_insert` so a pool at zero reacts to the first insert
within a second, instead of waiting for its next evaluation.

LISTEN needs a session of its own: through PgBouncer in transaction mode it hears nothing. The URL is the
pool's `database.listenSecretRef` when set (a direct one), else its database URL; a connection that turns
out to go through a pooler (its cancel key is not the backend's pid, see civic_runner's pooling.py) is
given up with one warning, and the pool is evaluated at its pollSeconds only.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger("civic_operator.listener")

Callback = Callable[[str], None]  # queue name


async def behind_pooler(conn: psycopg.AsyncConnection[Any]) -> bool:
    """A pooler hands out cancel keys of its own: the key's pid is not the backend running the queries."""
    cur = await conn.execute("SELECT pg_backend_pid()")
    row = await cur.fetchone()
    return row is None or int(row[0]) != conn.info.backend_pid


class InsertListener:
    """One connection per (database, schema); subscribers register callbacks by key."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._subscribers: dict[tuple[str, str], dict[str, Callback]] = {}

    def subscribe(self, url: str, schema: str, key: str, callback: Callback, check_pooler: bool = True) -> None:
        """check_pooler=False: the pool says its URL keeps sessions (database.pooler: session)."""
        target = (url, schema)
        self._subscribers.setdefault(target, {})[key] = callback
        if target not in self._tasks or self._tasks[target].done():
            self._tasks[target] = asyncio.create_task(self._listen(url, schema, check_pooler), name=f"listen-{schema}")

    def unsubscribe(self, key: str) -> None:
        for target, subs in list(self._subscribers.items()):
            subs.pop(key, None)
            if not subs:
                del self._subscribers[target]
                task = self._tasks.pop(target, None)
                if task:
                    task.cancel()

    async def _listen(self, url: str, schema: str, check_pooler: bool = True) -> None:
        channel = f"{schema}.river_insert"
        backoff = 0.5
        while (url, schema) in self._subscribers:
            try:
                async with await psycopg.AsyncConnection.connect(
                    url, autocommit=True, connect_timeout=5, prepare_threshold=None
                ) as conn:
                    if check_pooler and await behind_pooler(conn):
                        log.warning(
                            "not listening for inserts: the URL goes through a connection pooler (PgBouncer), where "
                            "LISTEN hears nothing; set the pool's database.listenSecretRef to a direct URL (or "
                            "database.pooler: session). Until then the pool reacts at its pollSeconds",
                            extra={"channel": channel},
                        )
                        return
                    await conn.execute(f'LISTEN "{channel.replace(chr(34), chr(34) * 2)}"')
                    log.info("listening for inserts", extra={"channel": channel})
                    backoff = 0.5
                    async for n in conn.notifies():
                        self._dispatch(url, schema, n.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("insert listener lost; retrying", extra={"channel": channel, "error": str(exc).strip()})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)

    def _dispatch(self, url: str, schema: str, payload: str) -> None:
        try:
            queue = str(json.loads(payload).get("queue", ""))
        except (ValueError, AttributeError):
            return
        for callback in list(self._subscribers.get((url, schema), {}).values()):
            callback(queue)

    def listening(self, url: str, schema: str) -> bool:
        task = self._tasks.get((url, schema))
        return task is not None and not task.done()

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
