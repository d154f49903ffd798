"""Deadlines on database round trips.

A dead network path (a partition, a silently dropped NAT entry, a proxy that stopped forwarding)
does not close the connection: a query sent on it waits forever, and TCP keepalives cannot tell
when a proxy in the path still acknowledges. Every statement of the runner's loops is awaited
under a deadline instead, so the loop sees an error, the pool discards the connection (it is
returned mid-query) and the next try uses a new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from psycopg.conninfo import conninfo_to_dict

T = TypeVar("T")

CONNECT_TIMEOUT = 10  # seconds for a new connection, unless the URL sets connect_timeout
CLAIM = 10.0  # a claim is one index-served statement: milliseconds when the path is alive
COMPLETE = 30.0  # a batch of up to 5,000 outcomes
CHORE = 30.0  # elections, maintenance, queue upkeep, the insert watcher's ticks
LISTEN_KEEPALIVE = 30.0  # an idle LISTEN connection is checked this often (it would never notice)


READY_STALL = 5.0  # a claim or an outcome write unanswered this long makes /readyz fail at once


def stalled(started: float | None, now: float, limit: float = READY_STALL) -> bool:
    """Has a round trip begun at `started` (None: none in flight) gone unanswered for `limit` seconds?
    The deadlines above end it later (and psycopg's cancel through a dead path adds up to 10 s), but
    readiness should turn as soon as the path is known to be dead."""
    return started is not None and now - started >= limit


class DatabaseTimeout(Exception):
    """The database did not answer in time; the connection it was sent on is not to be reused."""


CANCEL_GRACE = 1.0  # seconds psycopg may spend cancelling a timed-out statement before its connection is closed


async def bounded(aw: Awaitable[T], seconds: float, what: str) -> T:
    """`aw`'s result, or DatabaseTimeout after `seconds`.

    A timed-out statement is cancelled; psycopg then sends a cancel request and waits for the server
    (up to 10 s), which through a dead path never answers. After CANCEL_GRACE a second cancel makes
    psycopg close the connection instead (its rule for an interrupted cancellation).
    """
    task = asyncio.ensure_future(aw)
    try:
        done, _ = await asyncio.wait({task}, timeout=seconds)
    except asyncio.CancelledError:
        _abandon(task)
        raise
    if task in done:
        return task.result()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=CANCEL_GRACE)
    if not done:
        task.cancel()
        await asyncio.wait({task})
    if not task.cancelled() and task.exception() is None:
        return task.result()  # it finished after all, in the grace
    raise DatabaseTimeout(f"{what}: no answer from the database in {seconds:g}s") from None


def _abandon(task: asyncio.Future[Any]) -> None:
    """Our caller is cancelled (a shutdown): stop the statement without waiting for it."""
    task.cancel()
    asyncio.get_running_loop().call_later(CANCEL_GRACE, task.cancel)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # no "exception never retrieved"


def connect_kwargs(url: str) -> dict[str, Any]:
    """Connection keywords that bound connecting: libpq (and psycopg's async connect) otherwise wait
    as long as the network lets them, which through a dead path is until the process ends."""
    return {} if "connect_timeout" in conninfo_to_dict(url) else {"connect_timeout": CONNECT_TIMEOUT}
