"""Deadlines for statements on the pipeline's synchronous connections, which run in worker threads.

psycopg's sync API has no per-call timeout, and a statement sent on a dead network path (a partition, a
proxy that stopped forwarding but still acknowledges TCP) waits for ever: keepalives see a live peer, and
the server's `statement_timeout` cannot help because the statement never reaches the server. The async
loops bound their round trips with asyncio (civic_runner.deadlines); here one watchdog thread ends a
statement that outlives its deadline instead.

How it ends one: `shutdown(SHUT_RDWR)` on a duplicate of the connection's socket descriptor. shutdown acts
on the socket, which every duplicate shares, so libpq's blocked wait wakes at once, reads end-of-file and
reports "server closed the connection"; psycopg raises OperationalError, the connection is BAD and
psycopg_pool discards it when it is returned. The watchdog never touches libpq's objects: closing or
cancelling a PGconn from another thread while its owner is inside libpq is a use-after-free. Closing the
duplicate afterwards leaves libpq's own descriptor as it was (libpq closes it with the connection).

Why the lock: the descriptor number is only this connection's while its statement runs. Once the owner
has returned the connection it may be closed and the number reused (another connection's socket, an S3
download's), so the owner ends each watch under the same lock under which the watchdog decides to fire:
either the watch is ended first and nothing is touched, or the socket is shut down while the statement
still holds its connection.
"""

from __future__ import annotations

import itertools
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg

log = logging.getLogger("civic_runner.pipeline.watchdog")

T = TypeVar("T")


class StatementTimeout(psycopg.OperationalError):
    """A statement got no answer in time and its connection was closed. An OperationalError, so whoever
    handles database failures (the thumbnail worker's retry messages, River's retry) treats it as one."""


def due(deadlines: Mapping[int, float], now: float) -> tuple[list[int], float | None]:
    """(the watches whose deadline has come, seconds until the next of the others; None: none left)."""
    expired = sorted(k for k, at in deadlines.items() if at <= now)
    later = [at for at in deadlines.values() if at > now]
    return expired, (min(later) - now if later else None)


@dataclass
class Watch:
    fd: int
    deadline: float
    key: int
    fired: bool = field(default=False)


def shutdown_socket(fd: int) -> None:
    """Shut down the socket behind `fd` (both ways) through a duplicate, leaving `fd` itself open."""
    try:
        dup = socket.socket(fileno=os.dup(fd))
    except OSError as exc:  # not a socket any more: nothing of ours to end
        log.warning("could not duplicate a timed-out connection's socket", extra={"error": str(exc)})
        return
    try:
        dup.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already shut down or disconnected: libpq is told either way
    finally:
        dup.close()


class Watchdog:
    """One daemon thread that ends statements past their deadline (started on first use)."""

    def __init__(self, name: str = "pipeline-db-watchdog", fire: Callable[[int], None] = shutdown_socket) -> None:
        self.name = name
        self._fire = fire
        self._cond = threading.Condition()
        self._active: dict[int, Watch] = {}
        self._keys = itertools.count()
        self._wake_at: float | None = None  # when the thread will look next (None: when notified)
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self, fd: int, seconds: float) -> Watch:
        with self._cond:
            w = Watch(fd, time.monotonic() + seconds, next(self._keys))
            self._active[w.key] = w
            self._stopping = False  # used again after close(): the pool is reopened on first use
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            elif self._wake_at is None or w.deadline < self._wake_at:
                # Only a deadline earlier than the thread's next look needs it awake; the usual case
                # (same timeout for every statement) costs no wake-up.
                self._cond.notify()
            return w

    def finish(self, w: Watch) -> bool:
        """End a watch; whether it fired (then its connection's socket is shut down)."""
        with self._cond:
            self._active.pop(w.key, None)
            return w.fired

    def close(self) -> None:
        """Stop the thread once no statement is watched (one still running keeps its deadline)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            thread, busy = self._thread, bool(self._active)
        if thread is not None and not busy and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                expired, wait = due({k: w.deadline for k, w in self._active.items()}, now)
                for key in expired:
                    w = self._active.pop(key)
                    w.fired = True
                    self._fire(w.fd)  # under the lock: the owner cannot have let go of the connection
                self._wake_at = None if wait is None else now + wait
                if self._stopping and not self._active:
                    break
                self._cond.wait(wait)
            # Under the lock, so that a start() from now on knows to start another thread.
            self._thread = None

    def call(self, conn: psycopg.Connection[Any], seconds: float, fn: Callable[[], T]) -> T:
        """fn() (statements on `conn`, from this thread) under a deadline of `seconds`: StatementTimeout
        when it passes, with `conn` closed, so the pool discards it."""
        w = self.start(conn.fileno(), seconds)
        try:
            result = fn()
        except psycopg.OperationalError as exc:
            if not self.finish(w):
                raise
            conn.close()
            raise StatementTimeout(
                f"no answer from the database in {seconds:g}s: the connection was closed (a new one is opened)"
            ) from exc
        except BaseException:
            if self.finish(w):
                conn.close()
            raise
        if self.finish(w):
            # The reply beat the shutdown: the result stands, but the socket is dead, so close the
            # connection now rather than let the next statement find out.
            conn.close()
        return result
