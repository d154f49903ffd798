"""The SQL of the runner's hot paths (claim, complete, notify), leader election and the maintenance
services, against River's tables.

Kept in one place (as River keeps its sqlc queries) so that compatibility with River's schema
and semantics can be read and reviewed as a whole. Functions take an open async connection. What is
not here stays beside its only user: the insert watcher's scan (watcher.py), the reindexer's REINDEX
(reindexer.py), the start-up access checks (access.py), and the commands' (admin.py, migrate.py).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg.types.numeric import Int8BinaryLoader

from civic_runner.job import Job, JobState
from civic_runner.outcome import Completion

MAX_ATTEMPTED_BY = 100  # River trims attempted_by to its last 100 entries


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def int_array(values: Sequence[int | None]) -> str:
    """An array literal of integers, for `%s::bigint[]`: psycopg dumps a list element by element in Python
    (a tenth of the runner's CPU per job in a burst's completions); one string is parsed by the server in C."""
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def channel(schema: str, topic: str) -> str:
    """River's NOTIFY channels are always schema-prefixed: `<schema>.<topic>`."""
    return f"{schema}.{topic}"


def py_time(column: str) -> str:
    """A timestamptz column as SQL that Python's datetime can always hold (years 1..9999).

    PostgreSQL also stores -infinity, infinity and years up to 294276 or before Christ; psycopg fails the
    whole fetch on one such value. Rows written by others may hold them; the runner uses these times only
    for ordering and metrics, so they are clamped a day inside Python's range here (the claim keeps
    PostgreSQL's integers: Job.attempted_us).
    """
    return (
        f"CASE WHEN {column} IS NULL THEN NULL ELSE least(greatest({column}, '0001-01-02 00:00:00+00'::timestamptz), "
        f"'9999-12-30 00:00:00+00'::timestamptz) END"
    )


@dataclass(frozen=True)
class Driver:
    schema: str

    @property
    def s(self) -> str:
        return quote_ident(self.schema)

    # -- claim and complete -------------------------------------------------------------------

    @property
    def claim_sql(self) -> str:
        """River's JobGetAvailable: lock, mark running, attempt+1, append the client id (parameters
        queue, limit, client_id, max_by). Also driven without Python by bench/ceiling.py."""
        return f"""
        WITH locked_jobs AS (
          SELECT id FROM {self.s}.river_job
          WHERE state = 'available' AND queue = %(queue)s AND scheduled_at <= now()
          ORDER BY priority ASC, scheduled_at ASC, id ASC
          LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED
        )
        UPDATE {self.s}.river_job j SET
          state = 'running',
          attempt = j.attempt + 1,
          attempted_at = now(),
          attempted_by = array_append(
            CASE WHEN coalesce(array_length(j.attempted_by, 1), 0) >= %(max_by)s
                 THEN j.attempted_by[array_length(j.attempted_by, 1) + 2 - %(max_by)s:]
                 ELSE j.attempted_by END,
            %(client_id)s::text)
        FROM locked_jobs WHERE j.id = locked_jobs.id
        RETURNING j.id, j.kind, j.queue, j.args::text, j.attempt, j.max_attempts, j.priority, j.metadata::text,
                  coalesce(array_length(j.errors, 1), 0), j.attempted_at, j.scheduled_at, j.created_at,
                  coalesce(j.tags, '{{}}')
        """

    async def claim(self, conn: AsyncConnection[Any], queue: str, limit: int, client_id: str) -> list[Job]:
        """Claim up to `limit` available jobs of the queue (claim_sql).

        The claim is committed when its rows come back, so nothing in them may fail to load: one bad value
        would leave the whole batch `running` until the rescuer. Rows come in binary, and a timestamptz is
        loaded as the int8 it is on the wire (PostgreSQL's microseconds): any value loads, infinity and years
        Python cannot hold included, and neither side spends on text or datetimes nobody reads (Job turns
        them into datetimes on demand). Args and metadata come as text, decoded per job (decode_problem).
        """
        params = {"queue": queue, "limit": limit, "client_id": client_id, "max_by": MAX_ATTEMPTED_BY}
        cur = conn.cursor(binary=True)
        cur.adapters.register_loader("timestamptz", Int8BinaryLoader)
        await cur.execute(self.claim_sql, params)
        rows = await cur.fetchall()
        jobs = [Job(*r) for r in rows]  # claim_sql returns Job's fields in their order
        jobs.sort(key=lambda j: (j.priority, j.scheduled_us, j.id))
        return jobs

    async def complete_many(
        self, conn: AsyncConnection[Any], items: Sequence[Completion]
    ) -> dict[int, tuple[str, bool]]:
        """River's JobSetStateIfRunningMany: one statement for a batch of outcomes.

        A row changes only while it is `running` the outcome's attempt (`run_attempt`): a row in
        another state, or running another attempt because ours was rescued and the job claimed again,
        is skipped (River 0.48 skips rows it gets back in `pending`/`running`). A requested metadata
        merge applies to a row that is not running, as River's; never to another attempt's run.
        A retry or snooze of a job whose cancellation was requested ends `cancelled` instead.
        Returns {id: (state after, written)}.
        """
        if not items:
            return {}
        plain = [c for c in items if c.state is JobState.COMPLETED and c.metadata_updates is None]
        result = await self._complete_plain(conn, plain) if plain else {}
        if len(plain) == len(items):
            return result
        rest = [c for c in items if not (c.state is JobState.COMPLETED and c.metadata_updates is None)]
        result.update(await self._complete_general(conn, rest))
        return result

    @property
    def complete_plain_sql(self) -> str:
        """Completed, nothing to merge or record: the common case (parameters ids, attempts).

        A plain conditional UPDATE, as River 0.51's: no `FOR UPDATE` of the rows first. Under READ
        COMMITTED a row another transaction changes meanwhile is re-read after its lock and the WHERE
        checked again, so the outcome still lands only on the attempt that ran; a separate row lock cost
        PostgreSQL a tuple-lock WAL record and a page write per job (bench/ceiling.py: the `locked`
        variant). Returns the ids written; the others are looked up apart (rare).
        """
        return f"""
        UPDATE {self.s}.river_job j SET state = 'completed', finalized_at = now()
        FROM unnest(%(ids)s::bigint[], %(attempts)s::smallint[]) AS t(id, run_attempt)
        WHERE j.id = t.id AND j.state = 'running' AND (t.run_attempt IS NULL OR j.attempt = t.run_attempt)
        RETURNING j.id
        """

    async def _complete_plain(
        self, conn: AsyncConnection[Any], items: Sequence[Completion]
    ) -> dict[int, tuple[str, bool]]:
        ids = [c.job_id for c in items]
        params = {"ids": int_array(ids), "attempts": int_array([c.run_attempt for c in items])}
        cur = await conn.execute(self.complete_plain_sql, params)
        result = {r[0]: ("completed", True) for r in await cur.fetchall()}
        if len(result) < len(ids):
            # Not running our attempt any more: their state now says why (completer.skip_note); a row gone
            # is reported `missing` by the completer.
            missing = [i for i in ids if i not in result]
            cur = await conn.execute(
                f"SELECT id, state::text FROM {self.s}.river_job WHERE id = ANY(%s::bigint[])", (missing,)
            )
            result.update({r[0]: (r[1], False) for r in await cur.fetchall()})
        return result

    async def _complete_general(
        self, conn: AsyncConnection[Any], items: Sequence[Completion]
    ) -> dict[int, tuple[str, bool]]:
        q = f"""
        WITH input AS (
          SELECT * FROM unnest(%s::bigint[], %s::smallint[], %s::text[], %s::boolean[], %s::timestamptz[],
                               %s::smallint[], %s::jsonb[], %s::jsonb[])
            AS t(id, run_attempt, state, finalize, scheduled_at, attempt, error, metadata_updates)
        ), locked AS (
          SELECT j.id,
                 (j.state = 'running' AND (t.run_attempt IS NULL OR j.attempt = t.run_attempt)) AS was_running,
                 (j.state = 'running' AND t.run_attempt IS NOT NULL AND j.attempt <> t.run_attempt) AS other_run,
                 (t.state IN ('available', 'retryable', 'scheduled')
                  AND jsonb_typeof(j.metadata) = 'object'
                  AND j.metadata ? 'cancel_attempted_at') AS cancel_override
          FROM input t JOIN {self.s}.river_job j ON j.id = t.id
          ORDER BY j.id
          FOR UPDATE OF j
        )
        UPDATE {self.s}.river_job j SET
          state = CASE WHEN NOT l.was_running THEN j.state
                       WHEN l.cancel_override THEN 'cancelled'
                       ELSE t.state::{self.s}.river_job_state END,
          finalized_at = CASE WHEN l.was_running AND (l.cancel_override OR t.finalize) THEN now()
                              ELSE j.finalized_at END,
          scheduled_at = CASE WHEN l.was_running AND NOT l.cancel_override AND t.scheduled_at IS NOT NULL
                              THEN t.scheduled_at ELSE j.scheduled_at END,
          attempt = CASE WHEN l.was_running AND NOT l.cancel_override AND t.attempt IS NOT NULL
                         THEN t.attempt ELSE j.attempt END,
          errors = CASE WHEN l.was_running AND t.error IS NOT NULL THEN array_append(j.errors, t.error)
                        ELSE j.errors END,
          metadata = CASE WHEN t.metadata_updates IS NOT NULL AND NOT l.other_run THEN j.metadata || t.metadata_updates
                          ELSE j.metadata END
        FROM input t JOIN locked l ON l.id = t.id
        WHERE j.id = t.id
        RETURNING j.id, j.state::text, l.was_running
        """
        params = (
            [c.job_id for c in items],
            [c.run_attempt for c in items],
            [c.state.value for c in items],
            [c.finalize for c in items],
            [c.scheduled_at for c in items],
            [c.attempt for c in items],
            [Jsonb(c.error) if c.error is not None else None for c in items],
            [Jsonb(c.metadata_updates) if c.metadata_updates is not None else None for c in items],
        )
        cur = await conn.execute(q, params)
        return {r[0]: (r[1], r[2]) for r in await cur.fetchall()}

    async def give_back_lost_claims(
        self, conn: AsyncConnection[Any], queue: str, client_id: str, known_ids: Sequence[int], since: datetime
    ) -> list[int]:
        """Rows a claim of ours committed whose reply never reached us (the connection broke on the way):
        `running`, last attempted by this client id, and not a job this process holds. Nobody works them,
        so they go back to `available` with the attempt given back, as at a graceful shutdown, instead of
        waiting for the rescuer (an hour by default) and costing an attempt. Only rows claimed `since` this
        process started: a restarted container keeps its pod name as client id, and the rows its previous
        process was working when it died are the rescuer's (they may have run, and count as attempts).
        Returns their ids."""
        cur = await conn.execute(
            f"""UPDATE {self.s}.river_job SET state = 'available', attempt = greatest(attempt - 1, 0),
                       scheduled_at = now()
                WHERE state = 'running' AND queue = %s
                  AND attempted_by[array_upper(attempted_by, 1)] = %s AND NOT (id = ANY(%s::bigint[]))
                  AND attempted_at >= %s
                RETURNING id""",
            (queue, client_id, list(known_ids), since),
        )
        return sorted(r[0] for r in await cur.fetchall())

    async def notify(self, conn: AsyncConnection[Any], topic: str, payload: dict[str, Any]) -> None:
        await conn.execute("SELECT pg_notify(%s, %s)", (channel(self.schema, topic), json.dumps(payload)))

    # -- queues -------------------------------------------------------------------------------

    async def queue_upsert(self, conn: AsyncConnection[Any], name: str) -> bool:
        """Register the queue in river_queue (River's producers do this); returns whether it is paused."""
        cur = await conn.execute(
            f"""INSERT INTO {self.s}.river_queue (name, created_at, metadata, updated_at)
                VALUES (%s, now(), '{{}}', now())
                ON CONFLICT (name) DO UPDATE SET updated_at = now()
                RETURNING paused_at IS NOT NULL""",
            (name,),
        )
        row = await cur.fetchone()
        return bool(row and row[0])

    async def control_poll(
        self, conn: AsyncConnection[Any], queue: str, running_ids: Sequence[int]
    ) -> tuple[bool | None, list[int]]:
        """What River's producers poll for beside LISTEN (0.51): whether the queue is paused (None: it has no
        river_queue row), and which of `running_ids` have a cancel request (JobCancel's metadata key)."""
        cur = await conn.execute(
            f"""SELECT (SELECT paused_at IS NOT NULL FROM {self.s}.river_queue WHERE name = %s),
                       ARRAY(SELECT id FROM {self.s}.river_job
                             WHERE id = ANY(%s::bigint[]) AND state = 'running'
                               AND jsonb_typeof(metadata) = 'object' AND metadata ? 'cancel_attempted_at')""",
            (queue, list(running_ids)),
        )
        row = await cur.fetchone()
        assert row is not None
        return row[0], list(row[1])

    # -- leadership (River's LeaderAttemptElect / Reelect / Resign) ------------------------------

    async def leader_attempt_elect(self, conn: AsyncConnection[Any], leader_id: str, ttl: float) -> datetime | None:
        async with conn.transaction():
            await conn.execute(f"DELETE FROM {self.s}.river_leader WHERE expires_at < now()")
            cur = await conn.execute(
                f"""INSERT INTO {self.s}.river_leader (leader_id, elected_at, expires_at)
                    VALUES (%s, now(), now() + make_interval(secs => %s))
                    ON CONFLICT (name) DO NOTHING RETURNING elected_at""",
                (leader_id, ttl),
            )
            row = await cur.fetchone()
        return row[0] if row else None

    async def leader_attempt_reelect(
        self, conn: AsyncConnection[Any], leader_id: str, elected_at: datetime, ttl: float
    ) -> bool:
        cur = await conn.execute(
            f"""UPDATE {self.s}.river_leader SET expires_at = now() + make_interval(secs => %s)
                WHERE elected_at = %s AND expires_at >= now() AND leader_id = %s RETURNING 1""",
            (ttl, elected_at, leader_id),
        )
        return await cur.fetchone() is not None

    async def leader_resign(self, conn: AsyncConnection[Any], leader_id: str, elected_at: datetime) -> None:
        async with conn.transaction():
            cur = await conn.execute(
                f"DELETE FROM {self.s}.river_leader WHERE elected_at = %s AND leader_id = %s RETURNING 1",
                (elected_at, leader_id),
            )
            if await cur.fetchone():
                await self.notify(conn, "river_leadership", {"leader_id": leader_id, "action": "resigned"})

    async def current_leader(self, conn: AsyncConnection[Any]) -> str | None:
        cur = await conn.execute(f"SELECT leader_id FROM {self.s}.river_leader WHERE expires_at >= now()")
        row = await cur.fetchone()
        return row[0] if row else None

    # -- maintenance ----------------------------------------------------------------------------

    async def schedule(self, conn: AsyncConnection[Any], horizon: float, limit: int) -> list[tuple[str, str]]:
        """River's JobSchedule: due scheduled/retryable jobs become available, except unique-key
        duplicates of a live job (or of an earlier row in this batch), which are discarded.
        Returns (queue, new state) per moved job."""
        q = f"""
        WITH jobs_to_schedule AS (
          SELECT id, unique_key, unique_states, priority, scheduled_at, queue
          FROM {self.s}.river_job
          WHERE state IN ('retryable', 'scheduled')
            AND scheduled_at <= now() + make_interval(secs => %(horizon)s)
          ORDER BY priority, scheduled_at, id
          LIMIT %(limit)s
          FOR UPDATE SKIP LOCKED
        ), ranked AS (
          SELECT *, CASE WHEN unique_key IS NOT NULL AND unique_states IS NOT NULL
                         THEN row_number() OVER (PARTITION BY unique_key ORDER BY priority, scheduled_at, id)
                    END AS row_num
          FROM jobs_to_schedule
        ), conflicts AS (
          SELECT DISTINCT j.unique_key FROM {self.s}.river_job j
          JOIN ranked r ON j.unique_key = r.unique_key AND j.id <> r.id
          WHERE j.unique_key IS NOT NULL AND j.unique_states IS NOT NULL
            AND {self.s}.river_job_state_in_bitmask(j.unique_states, j.state)
        ), decided AS (
          SELECT r.id, (r.row_num IS NOT NULL AND (c.unique_key IS NOT NULL OR r.row_num > 1)) AS discard
          FROM ranked r LEFT JOIN conflicts c ON r.unique_key = c.unique_key
        )
        UPDATE {self.s}.river_job j SET
          state = CASE WHEN d.discard THEN 'discarded' ELSE 'available' END::{self.s}.river_job_state,
          finalized_at = CASE WHEN d.discard THEN now() ELSE j.finalized_at END,
          metadata = CASE WHEN d.discard THEN j.metadata || '{{"unique_key_conflict": "scheduler_discarded"}}'
                          ELSE j.metadata END
        FROM decided d WHERE j.id = d.id
        RETURNING j.queue, j.state::text
        """
        cur = await conn.execute(q, {"horizon": horizon, "limit": limit})
        return [(r[0], r[1]) for r in await cur.fetchall()]

    async def stuck_horizon(self, conn: AsyncConnection[Any], older_than: float) -> datetime:
        """The database's now minus `older_than`: running jobs attempted before it count as stuck (one
        clock, the server's, for both the rescuer's read and its update)."""
        cur = await conn.execute("SELECT now() - make_interval(secs => %s)", (older_than,))
        row = await cur.fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]

    async def stuck_jobs(self, conn: AsyncConnection[Any], horizon: datetime, limit: int) -> list[dict[str, Any]]:
        """Running jobs attempted before `horizon`. The metadata itself is not read: the rescuer needs only
        whether a cancel was requested, and a row whose metadata Python cannot decode must not stop it."""
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(
            f"""SELECT id, kind, attempt, max_attempts, coalesce(array_length(errors, 1), 0) AS n_errors,
                       {py_time("attempted_at")} AS attempted_at,
                       (jsonb_typeof(metadata) = 'object' AND metadata ? 'cancel_attempted_at') AS cancel_requested
                FROM {self.s}.river_job
                WHERE state = 'running' AND attempted_at < %s
                ORDER BY id LIMIT %s""",
            (horizon, limit),
        )
        return await cur.fetchall()

    async def rescue_many(
        self,
        conn: AsyncConnection[Any],
        rescues: Sequence[tuple[int, str, datetime | None, dict[str, Any]]],
        horizon: datetime,
    ) -> int:
        """Apply rescuer decisions: (id, new state, scheduled_at or None, error entry).

        As River's JobRescueMany (0.48), a row changes only if it is still running *and* was attempted
        before the horizon: a job that finished, was retried and claimed again between the read and this
        update is running a new attempt and must be left alone.
        """
        if not rescues:
            return 0
        q = f"""
        WITH input AS (
          SELECT * FROM unnest(%s::bigint[], %s::text[], %s::timestamptz[], %s::jsonb[])
            AS t(id, state, scheduled_at, error)
        )
        UPDATE {self.s}.river_job j SET
          state = t.state::{self.s}.river_job_state,
          finalized_at = CASE WHEN t.state IN ('cancelled', 'discarded') THEN now() ELSE j.finalized_at END,
          scheduled_at = coalesce(t.scheduled_at, j.scheduled_at),
          errors = array_append(j.errors, t.error),
          metadata = CASE WHEN jsonb_typeof(j.metadata) = 'object' THEN j.metadata ELSE '{{}}'::jsonb END
                     || jsonb_build_object('river:rescue_count',
                          -- a count someone else wrote as text, a fraction or a huge number must not fail
                          -- the whole batch's cast: it restarts at 1.
                          coalesce((CASE WHEN jsonb_typeof(j.metadata) = 'object'
                                          AND j.metadata->>'river:rescue_count' ~ '^[0-9]{1, 9}$'
                                         THEN j.metadata->>'river:rescue_count' END)::int, 0) + 1)
        FROM input t
        WHERE j.id = t.id AND j.state = 'running' AND j.attempted_at < %s
        """
        cur = await conn.execute(
            q,
            (
                [r[0] for r in rescues],
                [r[1] for r in rescues],
                [r[2] for r in rescues],
                [Jsonb(r[3]) for r in rescues],
                horizon,
            ),
        )
        return cur.rowcount

    async def clean(self, conn: AsyncConnection[Any], state: str, older_than: float, limit: int) -> int:
        cur = await conn.execute(
            f"""DELETE FROM {self.s}.river_job WHERE id IN (
                  SELECT id FROM {self.s}.river_job
                  WHERE state = %s AND finalized_at < now() - make_interval(secs => %s)
                  ORDER BY id LIMIT %s)""",
            (state, older_than, limit),
        )
        return cur.rowcount

    async def clean_queues(self, conn: AsyncConnection[Any], older_than: float) -> int:
        cur = await conn.execute(
            f"DELETE FROM {self.s}.river_queue WHERE updated_at < now() - make_interval(secs => %s)",
            (older_than,),
        )
        return cur.rowcount

    async def migration_version(self, conn: AsyncConnection[Any]) -> int:
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{self.s}.river_migration",))
        row = await cur.fetchone()
        if not row or not row[0]:
            return 0
        cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {self.s}.river_migration WHERE line = 'main'")
        row = await cur.fetchone()
        return int(row[0]) if row else 0
