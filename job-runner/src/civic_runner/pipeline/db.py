"""The pipeline's reads and writes of Civic OS's two tables, from worker threads.

A small synchronous pool (opened on first use, `PIPELINE_DB_MAX_CONNS`, default 2) separate from the
runner's async pool: workers are sync functions in threads and must not borrow the event loop's
connections. Statements are prepared never, so PgBouncer in transaction mode works too.

Every round trip is bounded, since a dead network path would otherwise hold a worker thread for ever:
connecting by `connect_timeout` (civic_runner.deadlines.connect_kwargs), each statement by
`PIPELINE_DB_STATEMENT_TIMEOUT` (civic_runner.pipeline.watchdog: the connection is closed and the pool
opens a new one), and the wait for a free connection by `pool_timeout`.
"""

from __future__ import annotations

import logging
import select
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import pq
from psycopg_pool import ConnectionPool

from civic_runner.deadlines import connect_kwargs
from civic_runner.driver import quote_ident
from civic_runner.pipeline.errors import RLS_HINT
from civic_runner.pipeline.watchdog import Watchdog

log = logging.getLogger("civic_runner.pipeline.db")

SIZE_COLUMNS = {
    "small": "s3_thumbnail_small_key",
    "medium": "s3_thumbnail_medium_key",
    "large": "s3_thumbnail_large_key",
}


@dataclass(frozen=True)
class FileRow:
    bucket: str
    original_key: str
    file_type: str
    thumbnail_status: str | None


def rls_may_block(rls_enabled: bool, rls_forced: bool, is_owner: bool, bypasses: bool) -> bool:
    """Whether Civic OS's UPDATE policy applies to us (owners are exempt unless RLS is forced)."""
    if not rls_enabled or bypasses:
        return False
    return rls_forced or not is_owner


def check_idle(conn: psycopg.Connection[Any]) -> None:
    """The pool's check when it hands out a connection: raise (the pool then discards it and takes
    another) if the server or something in the path closed it while it sat idle (a restart, a proxy or
    load balancer dropping its connections when the path comes back). Without a round trip, which on a
    dead path would wait unbounded: an idle connection has nothing to read unless it was closed (or the
    server sent a notice, which consuming reads harmlessly)."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    # A server that ends a session sends its FATAL message, then closes: the first read takes the
    # message, a second one finds the end. A few reads at most; a live connection stops being readable.
    for _ in range(4):
        if not poller.poll(0):
            break
        try:
            conn.pgconn.consume_input()
        except psycopg.OperationalError:
            conn.close()
            raise
    else:
        conn.close()
        raise psycopg.OperationalError("the idle connection keeps receiving data: not reused")
    if conn.pgconn.status != pq.ConnStatus.OK:
        conn.close()
        raise psycopg.OperationalError("the connection was closed while idle in the pool")


class Database:
    def __init__(
        self,
        url: str,
        schema: str,
        max_size: int = 2,
        statement_timeout: float = 10.0,
        pool_timeout: float = 15.0,
    ) -> None:
        self.url = url
        self.schema = schema
        self.max_size = max_size
        self.statement_timeout = statement_timeout
        self.pool_timeout = pool_timeout  # the wait for a free (or newly opened) connection
        self._watchdog = Watchdog()
        s = quote_ident(schema)
        self.files = f"{s}.files"
        self.requests = f"{s}.file_upload_requests"
        self.jobs = f"{s}.river_job"
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()
        # Whether row-level security on files applies to our role (None: not known yet). When it
        # may, a row we cannot see may be hidden rather than deleted.
        self.rls_applies: bool | None = None
        self.role: str | None = None

    def pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.url,
                    min_size=1,
                    max_size=self.max_size,
                    # Autocommit also keeps the pool from ever rolling back a returned connection, a
                    # round trip no deadline of ours would cover.
                    kwargs={"autocommit": True, "prepare_threshold": None, **connect_kwargs(self.url)},
                    name="civic-pipeline",
                    check=check_idle,
                    timeout=self.pool_timeout,
                    num_workers=1,
                    open=True,
                )
                self._check_rls()
            return self._pool

    def _check_rls(self) -> None:
        """Warn once, at startup, if Civic OS's row-level security can hide rows from our UPDATEs."""
        assert self._pool is not None
        try:
            _, rows = self._run(
                self._pool,
                """SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) = current_user,
                          r.rolsuper OR r.rolbypassrls, current_user
                   FROM pg_class c, pg_roles r
                   WHERE c.oid = to_regclass(%s) AND r.rolname = current_user""",
                (self.files,),
            )
        except Exception as exc:  # the database may not be up yet: jobs will report it
            log.warning("could not check row-level security", extra={"error": str(exc).strip()})
            return
        if not rows:
            return
        row = rows[0]
        self.role = str(row[4])
        self.rls_applies = rls_may_block(bool(row[0]), bool(row[1]), bool(row[2]), bool(row[3]))
        if self.rls_applies:
            log.warning(
                "row-level security applies to this role: files it may not read stay invisible and "
                "thumbnail updates of older files will fail",
                extra={"role": row[4], "table": self.files, "hint": RLS_HINT},
            )

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
            self._watchdog.close()

    def _execute(self, sql: str, params: tuple[Any, ...]) -> tuple[int, list[tuple[Any, ...]]]:
        return self._run(self.pool(), sql, params)

    def _run(self, pool: ConnectionPool, sql: str, params: tuple[Any, ...]) -> tuple[int, list[tuple[Any, ...]]]:
        """One statement under the deadline (StatementTimeout after it: an OperationalError, the
        connection closed, so the pool discards it and opens another)."""
        with pool.connection() as conn:

            def statement() -> tuple[int, list[tuple[Any, ...]]]:
                cur = conn.execute(sql, params)
                return cur.rowcount, cur.fetchall() if cur.description else []

            return self._watchdog.call(conn, self.statement_timeout, statement)

    # -- file_upload_requests ---------------------------------------------------------------------

    def complete_request(self, request_id: uuid.UUID, url: str, key: str, file_id: uuid.UUID | None) -> int:
        """Rows updated; a request already completed is left alone (a re-run must not hand out a
        second URL and file id while the browser may already be using the first)."""
        count, _ = self._execute(
            f"""UPDATE {self.requests}
                SET presigned_url = %s, s3_key = %s, file_id = %s, status = 'completed', error_message = NULL
                WHERE id = %s AND status IS DISTINCT FROM 'completed'""",
            (url, key, file_id, request_id),
        )
        return count

    def request_status(self, request_id: uuid.UUID) -> str | None:
        _, rows = self._execute(f"SELECT coalesce(status, '') FROM {self.requests} WHERE id = %s", (request_id,))
        return str(rows[0][0]) if rows else None

    def fail_request(self, request_id: uuid.UUID, message: str) -> int:
        count, _ = self._execute(
            f"UPDATE {self.requests} SET status = 'failed', error_message = %s WHERE id = %s",
            (message, request_id),
        )
        return count

    # -- river_job --------------------------------------------------------------------------------

    def job_errors(self, job_id: int) -> list[str | None]:
        """The messages of the errors River recorded on a job's earlier attempts, oldest first."""
        _, rows = self._execute(
            f"SELECT array(SELECT e->>'error' FROM unnest(errors) AS e) FROM {self.jobs} WHERE id = %s", (job_id,)
        )
        return list(rows[0][0] or []) if rows else []

    # -- files ------------------------------------------------------------------------------------

    def file_row(self, file_id: uuid.UUID) -> FileRow | None:
        _, rows = self._execute(
            f"SELECT s3_bucket, s3_original_key, file_type, thumbnail_status FROM {self.files} WHERE id = %s",
            (file_id,),
        )
        if not rows:
            return None
        bucket, key, file_type, status = rows[0]
        return FileRow(str(bucket), str(key), str(file_type), status)

    def thumbnail_processing(self, file_id: uuid.UUID) -> int:
        count, _ = self._execute(
            f"""UPDATE {self.files} SET thumbnail_status = 'processing', thumbnail_error = NULL, updated_at = now()
                WHERE id = %s""",
            (file_id,),
        )
        return count

    def thumbnail_completed(self, file_id: uuid.UUID, keys: dict[str, str]) -> int:
        count, _ = self._execute(
            f"""UPDATE {self.files}
                SET {SIZE_COLUMNS["small"]} = %s, {SIZE_COLUMNS["medium"]} = %s, {SIZE_COLUMNS["large"]} = %s,
                    thumbnail_status = 'completed', thumbnail_error = NULL, updated_at = now()
                WHERE id = %s""",
            (keys["small"], keys["medium"], keys["large"], file_id),
        )
        return count

    def thumbnail_error(self, file_id: uuid.UUID, status: str, message: str) -> int:
        """status 'failed' (for good) or 'pending' (a retry is scheduled; the message says so)."""
        count, _ = self._execute(
            f"UPDATE {self.files} SET thumbnail_status = %s, thumbnail_error = %s, updated_at = now() WHERE id = %s",
            (status, message, file_id),
        )
        return count
