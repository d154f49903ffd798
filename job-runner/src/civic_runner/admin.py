"""Operator-facing commands on the job table: enqueue, list, show, retry, cancel, stats.

River's semantics for manual retry (JobRetry) and cancel (JobCancel), including the
`river_control` notification that makes the runner holding a running job cancel it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from civic_runner.config import QUEUE_NAME_RE
from civic_runner.driver import channel, quote_ident
from civic_runner.outcome import go_time

JOB_COLUMNS = (
    "id, state::text, kind, queue, priority, attempt, max_attempts, args, metadata, errors, tags, "
    "attempted_by, created_at, scheduled_at, attempted_at, finalized_at"
)


class Admin:
    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        self.conn = conn
        self.schema = schema
        self.s = quote_ident(schema)

    def enqueue(
        self,
        kind: str,
        args: Any,
        *,
        queue: str = "default",
        priority: int = 1,
        max_attempts: int = 25,
        scheduled_at: datetime | None = None,
        tags: list[str] | None = None,
        count: int = 1,
    ) -> list[int]:
        """Insert jobs as River's client does, and notify the queue in the same transaction."""
        if not QUEUE_NAME_RE.match(queue):
            raise ValueError(f"invalid queue name {queue!r}")
        if not 1 <= priority <= 4:
            raise ValueError("priority must be 1..4")
        state = "scheduled" if scheduled_at else "available"
        with self.conn.transaction():
            cur = self.conn.execute(
                f"""INSERT INTO {self.s}.river_job
                      (kind, args, queue, priority, max_attempts, scheduled_at, state, tags)
                    SELECT %s, %s, %s, %s, %s, coalesce(%s, now()), %s::{self.s}.river_job_state, %s::varchar(255)[]
                    FROM generate_series(1, %s) RETURNING id""",
                (kind, Jsonb(args), queue, priority, max_attempts, scheduled_at, state, tags or [], count),
            )
            ids = [r[0] for r in cur.fetchall()]
            if state == "available":
                self.conn.execute(
                    "SELECT pg_notify(%s, %s)", (channel(self.schema, "river_insert"), json.dumps({"queue": queue}))
                )
        return ids

    def list(
        self, state: str | None = None, queue: str | None = None, kind: str | None = None, limit: int = 50
    ) -> list[dict[str, Any]]:
        where, params = [], []
        for col, val in (("state::text", state), ("queue", queue), ("kind", kind)):
            if val:
                where.append(f"{col} = %s")
                params.append(val)
        clause = ("WHERE " + " AND ".join(where)) if where else ""
        cur = self.conn.cursor(row_factory=dict_row)
        cur.execute(
            f"SELECT {JOB_COLUMNS} FROM {self.s}.river_job {clause} ORDER BY id DESC LIMIT %s", (*params, limit)
        )
        return cur.fetchall()

    def show(self, job_id: int) -> dict[str, Any] | None:
        cur = self.conn.cursor(row_factory=dict_row)
        cur.execute(f"SELECT {JOB_COLUMNS} FROM {self.s}.river_job WHERE id = %s", (job_id,))
        return cur.fetchone()

    def retry(self, job_id: int) -> dict[str, Any] | None:
        """River's JobRetry: any state but running becomes available now; one more attempt if exhausted.

        As River v0.51's, it forgets an earlier cancel request (`cancel_attempted_at`): kept, the completion's
        cancel override would end the retried job `cancelled` at its next error instead of retrying it.
        """
        cur = self.conn.cursor(row_factory=dict_row)
        cur.execute(
            f"""UPDATE {self.s}.river_job SET
                  state = 'available', finalized_at = NULL, scheduled_at = now(),
                  max_attempts = CASE WHEN attempt = max_attempts THEN max_attempts + 1 ELSE max_attempts END,
                  -- `-` on a JSON scalar is an error, on an array it removes an element: objects only.
                  metadata = CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata - 'cancel_attempted_at'
                                  ELSE metadata END
                WHERE id = %s AND state <> 'running'
                RETURNING {JOB_COLUMNS}""",
            (job_id,),
        )
        row = cur.fetchone()
        if row:
            self.conn.execute(
                "SELECT pg_notify(%s, %s)", (channel(self.schema, "river_insert"), json.dumps({"queue": row["queue"]}))
            )
        return row

    def cancel(self, job_id: int) -> dict[str, Any] | None:
        """River's JobCancel. A running job stays running until its runner, told over
        `river_control`, stops it; it then ends cancelled."""
        now = go_time(datetime.now(UTC))
        with self.conn.transaction():
            cur = self.conn.cursor(row_factory=dict_row)
            cur.execute(f"SELECT state::text, queue FROM {self.s}.river_job WHERE id = %s FOR UPDATE", (job_id,))
            row = cur.fetchone()
            if row is None:
                return None
            if row["state"] not in ("cancelled", "completed", "discarded"):
                cur.execute(
                    f"""UPDATE {self.s}.river_job SET
                          metadata = CASE WHEN jsonb_typeof(metadata) = 'object' THEN metadata ELSE '{{}}' END
                                     || jsonb_build_object('cancel_attempted_at', %s::text),
                          state = CASE WHEN state = 'running' THEN state ELSE 'cancelled' END,
                          finalized_at = CASE WHEN state = 'running' THEN finalized_at ELSE now() END
                        WHERE id = %s""",
                    (now, job_id),
                )
                if row["state"] == "running":
                    payload = {"action": "cancel", "job_id": job_id, "queue": row["queue"]}
                    self.conn.execute(
                        "SELECT pg_notify(%s, %s)", (channel(self.schema, "river_control"), json.dumps(payload))
                    )
        return self.show(job_id)

    def stats(self, window_s: float = 3600.0) -> dict[str, Any]:
        cur = self.conn.cursor(row_factory=dict_row)
        cur.execute(
            f"SELECT queue, state::text AS state, count(*) AS n FROM {self.s}.river_job GROUP BY 1, 2 ORDER BY 1, 2"
        )
        depth: dict[str, dict[str, int]] = {}
        for r in cur.fetchall():
            depth.setdefault(r["queue"], {})[r["state"]] = r["n"]
        cur.execute(
            f"""SELECT queue, count(*) AS n,
                  percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                    (ORDER BY extract(epoch FROM finalized_at - created_at)) AS total_s,
                  percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                    (ORDER BY extract(epoch FROM attempted_at - scheduled_at)) AS wait_s
                FROM {self.s}.river_job
                WHERE state = 'completed' AND finalized_at > now() - make_interval(secs => %s)
                GROUP BY queue ORDER BY queue""",
            (window_s,),
        )
        latency = {
            r["queue"]: {
                "completed": r["n"],
                "insert_to_completed_s": dict(zip(("p50", "p95", "p99"), r["total_s"], strict=False)),
                "queue_wait_s": dict(zip(("p50", "p95", "p99"), r["wait_s"], strict=False)),
            }
            for r in cur.fetchall()
        }
        cur.execute(
            f"""SELECT id, kind, queue, finalized_at, errors[array_length(errors, 1)]->>'error' AS last_error
                FROM {self.s}.river_job WHERE state = 'discarded' ORDER BY finalized_at DESC NULLS LAST LIMIT 10"""
        )
        discarded = cur.fetchall()
        cur.execute(
            """SELECT n_live_tup, n_dead_tup, last_autovacuum, last_vacuum,
                      pg_total_relation_size(relid) AS total_bytes
               FROM pg_stat_user_tables WHERE schemaname = %s AND relname = 'river_job'""",
            (self.schema,),
        )
        bloat = cur.fetchone() or {}
        live, dead = bloat.get("n_live_tup") or 0, bloat.get("n_dead_tup") or 0
        if bloat:
            bloat["dead_pct"] = round(100.0 * dead / (live + dead), 1) if live + dead else 0.0
        return {"depth": depth, "latency": latency, "discarded_recent": discarded, "table": bloat}
