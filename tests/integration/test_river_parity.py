"""River v0.48 to v0.51.2 semantics against a real PostgreSQL (shared/reference/river-0.51.md): manual retry,
the rescuer's race guard, the completer's skipped rows, undecodable rows and `trace`. The producers' polls:
test_producer_polls.py; the reindexer: test_reindexer.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from civic_runner.admin import Admin
from civic_runner.config import RunnerConfig
from civic_runner.driver import Driver
from civic_runner.maintenance import Maintainer
from civic_runner.outcome import Ending, Outcome, plan_completion
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from tests.support.harness import InProcessRunner, insert, job, migrate, query, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.integration

DEEP = "[" * 3000 + "]" * 3000  # valid jsonb, but deeper than Python's json module can decode (RecursionError)
HUGE_INT = "9" * 5000  # valid jsonb, but longer than Python's int conversion limit (ValueError)


@pytest.fixture
def url(db_url: str) -> str:
    migrate(db_url)
    return db_url


def state_of(url: str, job_id: int) -> str:
    """Read without loading times or metadata (some tests store what Python cannot hold)."""
    return str(query(url, "SELECT state::text FROM metadata.river_job WHERE id = %s", (job_id,))[0][0])


def errors_of(url: str, job_id: int) -> list[dict[str, Any]] | None:
    rows = query(url, "SELECT errors FROM metadata.river_job WHERE id = %s", (job_id,))
    return rows[0][0]  # type: ignore[no-any-return]


async def _with_pool(url: str, fn: Any) -> Any:
    async with AsyncConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False) as pool:
        return await fn(pool)


def stuck(url: str, kind: str = "fail", **cols: Any) -> int:
    """A job some runner claimed two hours ago and never finished."""
    [jid] = insert(url, kind, {}, max_attempts=5, **cols)
    query(
        url,
        """UPDATE metadata.river_job SET state = 'running', attempt = 1, attempted_at = now() - interval '2 hours',
                  attempted_by = ARRAY['gone'] WHERE id = %s""",
        (jid,),
    )
    return jid


# -- 1. JobRetry (0.51.0) removes cancel_attempted_at ----------------------------------------------------


def test_retry_removes_cancel_attempted_at_so_the_next_error_retries(url: str) -> None:
    [jid] = insert(url, "fail", {}, scheduled_at=datetime.now(UTC) + timedelta(hours=1), state="scheduled")
    with psycopg.connect(url, autocommit=True) as conn:
        admin = Admin(conn, "metadata")
        cancelled = admin.cancel(jid)
        assert cancelled and cancelled["state"] == "cancelled" and "cancel_attempted_at" in cancelled["metadata"]
        again = admin.retry(jid)
    assert again and again["state"] == "available" and "cancel_attempted_at" not in again["metadata"]
    with InProcessRunner(url, registry):
        wait_for(lambda: job(url, jid)["errors"], what="the retried job's error")
    j = job(url, jid)
    # With the key kept, the completion's cancel override would make this error end `cancelled`.
    assert j["state"] in ("available", "retryable") and j["finalized_at"] is None, j


def test_retry_keeps_other_metadata_and_copes_with_non_object_metadata(url: str) -> None:
    done = {"state": "discarded", "finalized_at": datetime.now(UTC)}
    [kept] = insert(url, "echo", {}, metadata=Jsonb({"cancel_attempted_at": "x", "mine": 1}), **done)
    [scalar] = insert(url, "echo", {}, metadata=Jsonb("cancel_attempted_at"), **done)
    with psycopg.connect(url, autocommit=True) as conn:
        admin = Admin(conn, "metadata")
        a, b = admin.retry(kept), admin.retry(scalar)
    assert a and a["metadata"] == {"mine": 1}
    assert b and b["state"] == "available" and b["metadata"] == "cancel_attempted_at"


# -- 2. JobRescueMany (0.48) also requires state = 'running' AND attempted_at < stuck_horizon ----------------


@pytest.mark.parametrize("what", ["restarted", "finished"])
def test_rescuer_leaves_a_job_that_restarted_or_finished_after_it_was_read(url: str, what: str) -> None:
    rescued, raced = stuck(url), stuck(url)
    change = {
        # Finished, retried and claimed again between the rescuer's read and its update: running, but a new run.
        "restarted": "state = 'running', attempt = attempt + 1, attempted_at = now()",
        "finished": "state = 'completed', finalized_at = now()",
    }[what]

    class RacingDriver(Driver):
        async def stuck_jobs(self, conn: Any, *args: Any, **kw: Any) -> Any:
            rows = await super().stuck_jobs(conn, *args, **kw)
            await conn.execute(f"UPDATE metadata.river_job SET {change} WHERE id = %s", (raced,))
            return rows

    cfg = RunnerConfig.from_values({"database_url": url})

    async def rescue(pool: AsyncConnectionPool) -> int:
        return await Maintainer(cfg, pool, RacingDriver("metadata"), None, {"fail"}).rescue_once()  # type: ignore[arg-type]

    assert asyncio.run(_with_pool(url, rescue)) == 1
    r = job(url, rescued)
    assert r["state"] == "retryable" and r["errors"][0]["error"] == "Stuck job rescued by JobRescuer"
    j = job(url, raced)
    assert j["errors"] is None and "river:rescue_count" not in j["metadata"], j
    assert j["state"] == ("running" if what == "restarted" else "completed")


def test_rescue_error_entry_is_dated_at_the_rescue(url: str) -> None:
    """River's JobRescuer writes the rescue time in `at` (its other entries carry the run's start): a
    run that hung for hours shows when it was given up, in River UI as in ours."""
    jid = stuck(url)
    cfg = RunnerConfig.from_values({"database_url": url})
    before = datetime.now(UTC)

    async def rescue(pool: AsyncConnectionPool) -> int:
        return await Maintainer(cfg, pool, Driver("metadata"), None, {"fail"}).rescue_once()  # type: ignore[arg-type]

    assert asyncio.run(_with_pool(url, rescue)) == 1
    [entry] = job(url, jid)["errors"]
    at = datetime.fromisoformat(entry["at"])
    assert before <= at <= datetime.now(UTC), entry
    assert entry["attempt"] == 1 and entry["trace"] == ""


def test_rescuer_is_not_stopped_by_metadata_python_cannot_decode(url: str) -> None:
    """The rescuer decides from SQL (`metadata ? 'cancel_attempted_at'`), never by decoding the metadata."""
    deep = stuck(url)
    query(
        url,
        "UPDATE metadata.river_job SET metadata = jsonb_build_object('deep', %s::jsonb) WHERE id = %s",
        (DEEP, deep),
    )
    cancel = stuck(url)
    query(
        url,
        """UPDATE metadata.river_job SET metadata = jsonb_build_object('cancel_attempted_at', 'x',
                  'n', (%s)::numeric) WHERE id = %s""",
        (HUGE_INT, cancel),
    )
    cfg = RunnerConfig.from_values({"database_url": url})

    async def rescue(pool: AsyncConnectionPool) -> int:
        return await Maintainer(cfg, pool, Driver("metadata"), None, {"fail"}).rescue_once()  # type: ignore[arg-type]

    assert asyncio.run(_with_pool(url, rescue)) == 2
    # (Read without decoding the metadata here either.)
    rows = query(url, "SELECT state::text, metadata->>'river:rescue_count' FROM metadata.river_job ORDER BY id")
    assert rows == [("retryable", "1"), ("cancelled", "1")]


# -- 5. the completer (0.48): rows back in pending/running are skipped ----------------------------------------


def _claimed(url: str, kind: str = "echo") -> Any:
    [jid] = insert(url, kind, {"value": 1})

    async def claim(pool: AsyncConnectionPool) -> Any:
        async with pool.connection() as conn:
            [j] = await Driver("metadata").claim(conn, "default", 1, "us")
            return j

    j = asyncio.run(_with_pool(url, claim))
    assert j.id == jid
    return j


def _complete(url: str, completion: Any) -> dict[int, tuple[str, bool]]:
    async def go(pool: AsyncConnectionPool) -> dict[int, tuple[str, bool]]:
        async with pool.connection() as conn:
            return await Driver("metadata").complete_many(conn, [completion])

    return asyncio.run(_with_pool(url, go))  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("ending", "output"),
    [(Ending.COMPLETED, None), (Ending.COMPLETED, {"late": True}), (Ending.ERROR, None), (Ending.SNOOZE, None)],
    ids=["completed-plain", "completed-output", "error", "snooze"],
)
def test_an_outcome_for_a_job_now_running_another_attempt_is_skipped(url: str, ending: Ending, output: Any) -> None:
    """Our run was rescued, and another client claimed the job again: our late outcome must not end its run
    (a plain completion, nothing to merge, takes the driver's cheaper statement)."""
    j = _claimed(url)
    query(
        url,
        """UPDATE metadata.river_job SET attempt = attempt + 1, attempted_at = now(),
                  attempted_by = array_append(attempted_by, 'other') WHERE id = %s""",
        (j.id,),
    )
    now = datetime.now(UTC)
    outcome = Outcome(ending, message="late", snooze_seconds=60, output=output)
    result = _complete(url, plan_completion(j, outcome, started_at=now, now=now))
    assert result == {j.id: ("running", False)}
    row = job(url, j.id)
    assert row["state"] == "running" and row["attempt"] == 2 and row["errors"] is None
    assert row["metadata"] == {}, "nothing of the late outcome is merged"


def test_an_outcome_for_a_job_moved_to_pending_is_skipped(url: str) -> None:
    j = _claimed(url)
    query(url, "UPDATE metadata.river_job SET state = 'pending' WHERE id = %s", (j.id,))
    now = datetime.now(UTC)
    result = _complete(url, plan_completion(j, Outcome(Ending.ERROR, message="x"), started_at=now, now=now))
    assert result == {j.id: ("pending", False)}
    assert job(url, j.id)["errors"] is None


def test_a_plain_completion_of_a_deleted_job_reports_nothing_written(url: str) -> None:
    j = _claimed(url)
    query(url, "DELETE FROM metadata.river_job WHERE id = %s", (j.id,))
    now = datetime.now(UTC)
    assert _complete(url, plan_completion(j, Outcome(Ending.COMPLETED), started_at=now, now=now)) == {}


def test_the_completer_still_writes_its_own_run(url: str) -> None:
    j = _claimed(url)
    now = datetime.now(UTC)
    result = _complete(url, plan_completion(j, Outcome(Ending.COMPLETED, output=1), started_at=now, now=now))
    assert result == {j.id: ("completed", True)}
    assert job(url, j.id)["metadata"] == {"output": 1}


# -- 5. the decoder (0.48): a row that cannot be decoded fails its attempt ------------------------------------


def test_undecodable_args_or_metadata_fail_the_attempt_with_the_error_recorded(url: str) -> None:
    """`noop` never reads its args: the runner still decodes them (as River does before Work), so bad input
    fails the attempt instead of completing silently or failing later outside the worker."""
    [big_args] = insert(url, "noop", {})
    query(
        url, "UPDATE metadata.river_job SET args = ('{\"n\": ' || %s || '}')::jsonb WHERE id = %s", (HUGE_INT, big_args)
    )
    [deep_meta] = insert(url, "noop", {}, metadata=Jsonb({}))
    query(
        url,
        "UPDATE metadata.river_job SET metadata = jsonb_build_object('d', %s::jsonb) WHERE id = %s",
        (DEEP, deep_meta),
    )
    [good] = insert(url, "noop", {})
    with InProcessRunner(url, registry):
        wait_for(lambda: state_of(url, good) == "completed", what="the good job")
        wait_for(lambda: errors_of(url, big_args) and errors_of(url, deep_meta), what="both errors")
    for jid, error in (
        (big_args, "cannot decode the job's args: ValueError: Exceeds the limit"),
        (deep_meta, "cannot decode the job's metadata: RecursionError"),
    ):
        [entry, *_] = errors_of(url, jid) or [{}]
        assert entry["error"].startswith(error) and entry["attempt"] == 1 and entry["trace"] == "", entry
        assert state_of(url, jid) in ("available", "retryable", "running")  # retried (1 s) like any error


def test_timestamps_python_cannot_hold_do_not_strand_a_claimed_batch(url: str) -> None:
    """A claim is committed when its rows come back: one row that psycopg cannot load (a timestamp before year 1)
    would fail the whole fetch and leave every job of the batch `running` until the rescuer, an hour later."""
    [minus_inf] = insert(url, "echo", {"value": 1}, created_at="-infinity", scheduled_at="-infinity")
    [bc] = insert(url, "echo", {"value": 2}, created_at="4000-01-01 BC")
    others = insert(url, "echo", {"value": 3}, count=3)
    with InProcessRunner(url, registry):
        for jid in (minus_inf, bc, *others):
            wait_for(lambda jid=jid: state_of(url, jid) == "completed", what=f"job {jid} completed")


# -- 7. trace: the worker's traceback for an ordinary exception, "" for every other ending -----------------------


def test_trace_of_an_ordinary_exception_is_the_workers_traceback(url: str) -> None:
    [failing] = insert(url, "fail", {})
    [permanent] = insert(url, "permanent", {})
    [timeout] = insert(url, "quick_timeout", {})
    with InProcessRunner(url, registry):
        wait_for(lambda: all(job(url, j)["errors"] for j in (failing, permanent, timeout)), what="three errors")
    trace = job(url, failing)["errors"][0]["trace"]
    assert trace.startswith("Traceback (most recent call last):\n"), trace
    assert 'tests/support/kinds.py", line' in trace and ", in fail\n" in trace
    assert trace.rstrip("\n").endswith("ValueError: boom")
    # Frames of the runner and of the thread pool say nothing about the job: they are left out.
    assert "civic_runner" not in trace and "concurrent/futures" not in trace and "asyncio" not in trace, trace
    assert job(url, permanent)["errors"][0]["trace"] == ""
    assert job(url, timeout)["errors"][0]["trace"] == ""
