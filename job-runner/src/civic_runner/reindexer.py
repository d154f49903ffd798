"""The reindexer River's leader runs: rebuilds River's river_job indexes, which bloat on a busy table (the
GIN indexes on args and metadata most), without blocking writes.

River's defaults (its riverreindexer as of v0.51.2): daily at 00:00 UTC; per run, one index at a time,
`REINDEX INDEX CONCURRENTLY <schema>.<index>` with a 1 min timeout; a missing index is logged and skipped;
before each, leftovers of an earlier failed concurrent reindex (`<index>_ccnew`, `_ccold`, with numeric
suffixes: PostgreSQL's names for the copy it builds and the original it failed to drop) are dropped.
Only the leader runs it, so in a mixed fleet exactly one client (Go or Python) does.

The timeout is the client's, as River's (a context deadline there): on expiry psycopg cancels the
statement on the server. It needs no session setting, so the connection can be the pool's (the process
keeps to DB_MAX_CONNS) and nothing leaks to the next user of it, nor through PgBouncer. REINDEX
CONCURRENTLY cannot run in a transaction block: the pool's connections are autocommit.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from civic_runner import metrics
from civic_runner.driver import quote_ident

log = logging.getLogger("civic_runner.reindexer")

# River's default list (its reindexer's index names): every index of river_job at schema 6 and later.
DEFAULT_INDEXES = (
    "river_job_args_index",
    "river_job_kind",
    "river_job_metadata_index",
    "river_job_pkey",
    "river_job_prioritized_fetching_index",
    "river_job_state_and_finalized_at_index",
    "river_job_unique_idx",
)
NAME_MAX = 63  # PostgreSQL's identifier length (NAMEDATALEN - 1): longer names are truncated
_LEFTOVER_RE = re.compile(r"(?P<base>.+)_cc(?:new|old)[0-9]*")


def next_run_at(now: datetime, interval: float) -> datetime:
    """River's schedule: `(now + interval)` truncated to a multiple of the interval since 1970-01-01 UTC,
    i.e. daily at 00:00 UTC for 24 h (and every whole second for 1 s, in tests)."""
    t = now.timestamp() + interval
    return datetime.fromtimestamp(t - t % interval, UTC)


def is_leftover(name: str, index: str) -> bool:
    """Is `name` what a failed `REINDEX INDEX CONCURRENTLY <index>` leaves: `<index>_ccnew[N]` or
    `<index>_ccold[N]`? PostgreSQL shortens the base when the whole would pass 63 bytes."""
    m = _LEFTOVER_RE.fullmatch(name)
    if m is None:
        return False
    base = m.group("base")
    return base == index or (len(name.encode()) == NAME_MAX and index.startswith(base))


def parse_index_names(spec: str) -> tuple[str, ...]:
    """'a, b,,c' -> ('a', 'b', 'c'): the CIVIC_REINDEX_INDEXES list."""
    return tuple(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))


@dataclass
class IndexResult:
    index: str
    result: str  # ok, missing, timeout, failed, denied
    seconds: float = 0.0
    dropped: list[str] = field(default_factory=list)
    error: str = ""


class _Denied(Exception):
    """The role may not reindex (or drop) River's indexes: every other index will say the same."""


class Reindexer:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        schema: str,
        indexes: Sequence[str],
        timeout: float,
        is_leader: Callable[[], bool],
    ) -> None:
        self._pool = pool
        self._schema = schema
        self._s = quote_ident(schema)
        self._indexes = tuple(indexes)
        self._timeout = timeout
        self._is_leader = is_leader

    async def serve(self, interval: float) -> None:
        """Run at each scheduled time at which this process leads."""
        while True:
            now = datetime.now(UTC)
            at = next_run_at(now, interval)
            await asyncio.sleep((at - now).total_seconds())
            if not self._is_leader():
                continue
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a run must not end the service: the next one may work
                metrics.DB_ERRORS.labels("reindexer").inc()
                log.warning("reindexer: run failed", extra={"schema": self._schema, "error": str(exc).strip()})
            log.debug("reindexer: next run", extra={"at": next_run_at(datetime.now(UTC), interval).isoformat()})

    async def run_once(self) -> list[IndexResult]:
        t0 = time.perf_counter()
        results: list[IndexResult] = []
        for index in self._indexes:
            if not self._is_leader():
                log.info("reindexer: no longer the leader; run stopped", extra={"schema": self._schema})
                break
            try:
                r = await self._one(index)
            except _Denied as exc:
                r = IndexResult(index, "denied", error=str(exc))
                log.warning(
                    "reindexer: this role may not reindex River's indexes (it must own them, or have MAINTAIN on "
                    "PostgreSQL 17+); run stopped",
                    extra={"schema": self._schema, "index": index, "error": r.error},
                )
                metrics.REINDEX.labels(index, r.result).inc()
                results.append(r)
                break
            metrics.REINDEX.labels(index, r.result).inc()
            results.append(r)
        metrics.REINDEX_LAST_RUN.set(time.time())
        summary = {res: sum(1 for r in results if r.result == res) for res in ("ok", "missing", "timeout", "failed")}
        log.info(
            "reindexer: run finished",
            extra={"schema": self._schema, **summary, "duration_ms": round((time.perf_counter() - t0) * 1000, 1)},
        )
        return results

    async def _one(self, index: str) -> IndexResult:
        fields: dict[str, Any] = {"schema": self._schema, "index": index}
        async with self._pool.connection() as conn:
            cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{self._s}.{quote_ident(index)}",))
            row = await cur.fetchone()
            if not (row and row[0]):
                log.info("reindexer: index not found; skipped", extra=fields)
                return IndexResult(index, "missing")
            result = IndexResult(index, "ok")
            try:
                for name, valid in await self._leftovers(conn, index):
                    await self._timed(conn, f"DROP INDEX CONCURRENTLY IF EXISTS {self._s}.{quote_ident(name)}")
                    result.dropped.append(name)
                    metrics.REINDEX_LEFTOVERS.labels(index).inc()
                    log.warning(
                        "reindexer: dropped the leftover of a failed concurrent reindex",
                        extra={**fields, "leftover": name, "was_valid": valid},
                    )
                t0 = time.perf_counter()
                await self._timed(conn, f"REINDEX INDEX CONCURRENTLY {self._s}.{quote_ident(index)}")
                result.seconds = time.perf_counter() - t0
            except TimeoutError:
                result.result = "timeout"
                log.warning(
                    "reindexer: timed out; what it left is dropped on the next run",
                    extra={**fields, "timeout_s": self._timeout},
                )
                return result
            except psycopg.errors.InsufficientPrivilege as exc:
                raise _Denied(str(exc).strip()) from exc
            except psycopg.Error as exc:
                result.result, result.error = "failed", str(exc).strip()
                log.warning("reindexer: failed", extra={**fields, "error": result.error})
                return result
        metrics.REINDEX_SECONDS.labels(index).observe(result.seconds)
        log.info("reindexer: rebuilt index", extra={**fields, "duration_ms": round(result.seconds * 1000, 1)})
        return result

    async def _leftovers(self, conn: psycopg.AsyncConnection[Any], index: str) -> list[tuple[str, bool]]:
        """Indexes of the schema named like the leftovers of a failed concurrent reindex of `index`."""
        cur = await conn.execute(
            """SELECT c.relname, i.indisvalid FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = %s AND c.relname LIKE '%%\\_cc%%' ORDER BY c.relname""",
            (self._schema,),
        )
        return [(str(name), bool(valid)) for name, valid in await cur.fetchall() if is_leftover(str(name), index)]

    async def _timed(self, conn: psycopg.AsyncConnection[Any], sql: str) -> None:
        """One statement under the timeout; on expiry psycopg cancels it on the server (TimeoutError)."""
        await asyncio.wait_for(conn.execute(sql), self._timeout)
