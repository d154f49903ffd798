"""Connection poolers (PgBouncer) in front of PostgreSQL: what the runner may do on which connection.

In PgBouncer's transaction mode a client's connection is a different server session from one transaction
to the next. Whatever lives in a session is then lost or, worse, met by another client: prepared
statements (psycopg prepares a query it has run 5 times, as `_pg3_N`: `... does not exist` / `already
exists`), LISTEN (notifications go to whichever client holds the server connection, or nobody), session
advisory locks (the insert watcher's, the migrator's), SET without LOCAL, temporary tables.

The runner's own statements hold no session state except those three, so through such a pooler it runs
with prepared statements off, and LISTEN and the insert watcher go to a direct connection
(DATABASE_LISTEN_URL) or nowhere (poll only).

Detection (CIVIC_DB_POOLER=auto): PostgreSQL tells a client its backend's pid in BackendKeyData, the key
of cancel requests. A pooler cannot: the client connects before a server is chosen, and the server
changes, so PgBouncer (and every multiplexing pooler) hands out keys of its own. A plain TCP proxy
passes the server's through. So `pg_backend_pid()` differing from the key's pid means a pooler. It cannot
tell session from transaction mode: both count as transaction mode, the safe reading, unless
CIVIC_DB_POOLER=session says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import AsyncConnection, Connection

MODES = ("auto", "session", "transaction")
PID_SQL = "SELECT pg_backend_pid()"


def check_mode(mode: str) -> str:
    m = mode.strip().lower()
    if m not in MODES:
        raise ValueError(f"must be one of {', '.join(MODES)}, got {mode!r}")
    return m


def behind_pooler(key_pid: int, server_pid: int) -> bool:
    """The connection's cancel key names another process than the one running its queries."""
    return key_pid != server_pid


def pooled(mode: str, detected: bool | None) -> bool:
    """Does the URL have to be treated as transaction-pooled? `detected` is auto's finding (None: unknown
    yet, which counts as pooled: nothing session-scoped is started on a guess)."""
    if mode == "transaction":
        return True
    if mode == "session":
        return False
    return detected is not False


@dataclass(frozen=True)
class ConnectionPlan:
    listen_url: str | None  # where the notifier LISTENs; None: poll only
    watcher: bool  # the insert watcher runs (on the listen connection: it takes a session lock there)
    notes: list[str] = field(default_factory=list)  # said once in the log at start


def plan_connections(
    *,
    mode: str,
    database_url_pooled: bool,
    database_url: str,
    listen_url: str,
    poll_only: bool,
    watch_interval: float,
) -> ConnectionPlan:
    """Where LISTEN goes and whether the insert watcher runs (pure; table-tested)."""
    notes: list[str] = []
    if poll_only:
        notes.append("CIVIC_POLL_ONLY: no LISTEN and no insert watcher; queues are polled every fetch poll interval")
        return ConnectionPlan(None, False, notes)
    target: str | None
    if listen_url:
        target = listen_url
    elif database_url_pooled:
        target = None
        why = "set by CIVIC_DB_POOLER" if mode == "transaction" else "detected"
        notes.append(
            f"DATABASE_URL goes through a connection pooler ({why}): prepared statements off; no LISTEN and no "
            "insert watcher on it, so queues are polled (latency up to CIVIC_FETCH_POLL_INTERVAL). Set "
            "DATABASE_LISTEN_URL to a direct PostgreSQL URL for millisecond wake-ups"
            + ("" if mode == "transaction" else ", or CIVIC_DB_POOLER=session if the pooler keeps sessions")
        )
    else:
        target = database_url
    if target is not None and database_url_pooled:
        notes.append(
            "DATABASE_URL goes through a connection pooler: prepared statements off; LISTEN and the insert watcher "
            "on DATABASE_LISTEN_URL"
        )
    return ConnectionPlan(target, target is not None and watch_interval > 0, notes)


def connection_detected_pooled(key_pid: int, row: Any) -> bool:
    return behind_pooler(key_pid, int(row[0])) if row else True


async def detect(conn: AsyncConnection[Any]) -> bool:
    """One round trip: is this connection a pooler's (see the module's docstring)?"""
    cur = await conn.execute(PID_SQL, prepare=False)
    return connection_detected_pooled(conn.info.backend_pid, await cur.fetchone())


def detect_sync(conn: Connection[Any]) -> bool:
    cur = conn.execute(PID_SQL, prepare=False)
    return connection_detected_pooled(conn.info.backend_pid, cur.fetchone())
