"""LISTEN on each database's `<schema>.river_insert` so a pool at zero reacts to the first insert
within a second, instead of waiting for its next evaluation."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import psycopg

log = logging.getLogger("civic_operator.listener")

Callback = Callable[[str], None]  # queue name


class InsertListener:
    """One connection per (database, schema); subscribers register callbacks by key."""

    def __init__(self) -> None:
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._subscribers: dict[tuple[str, str], dict[str, Callback]] = {}

    def subscribe(self, url: str, schema: str, key: str, callback: Callback) -> None:
        target = (url, schema)
        self._subscribers.setdefault(target, {})[key] = callback
        if target not in self._tasks or self._tasks[target].done():
            self._tasks[target] = asyncio.create_task(self._listen(url, schema), name=f"listen-{schema}")

    def unsubscribe(self, key: str) -> None:
        for target, subs in list(self._subscribers.items()):
            subs.pop(key, None)
            if not subs:
                del self._subscribers[target]
                task = self._tasks.pop(target, None)
                if task:
                    task.cancel()

    async def _listen(self, url: str, schema: str) -> None:
        channel = f"{schema}.river_insert"
        backoff = 0.5
        while (url, schema) in self._subscribers:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=5) as conn:
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

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()
