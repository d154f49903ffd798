"""Every state transition of the runner against a real PostgreSQL (River's semantics)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from civic_runner.admin import Admin

from tests.support.harness import InProcessRunner, insert, job, migrate, query, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.integration


@pytest.fixture
def url(db_url: str) -> str:
    migrate(db_url)
    return db_url


def state_of(url: str, job_id: int) -> str:
    return str(job(url, job_id)["state"])


def test_complete_with_output_and_claim_columns(url: str) -> None:
    [jid] = insert(url, "echo", {"value": {"answer": 42}})
    with InProcessRunner(url, registry) as r:
        wait_for(lambda: state_of(url, jid) == "completed", what="completed")
    j = job(url, jid)
    assert j["attempt"] == 1 and j["finalized_at"] is not None and j["attempted_at"] is not None
    assert j["attempted_by"] == [r.cfg.client_id]
    assert j["metadata"]["output"] == {"answer": 42}
    assert j["errors"] is None


def test_error_is_retried_with_river_backoff_and_entry_shape(url: str) -> None:
    [jid] = insert(url, "fail", max_attempts=3)
    before = datetime.now(UTC)
    with InProcessRunner(url, registry):
        wait_for(lambda: job(url, jid)["errors"], what="an error entry")
    j = job(url, jid)
    # First retry after 1 s (+/- 10 %): within the scheduler interval, so straight to available.
    assert j["state"] == "available" and j["attempt"] == 1 and j["finalized_at"] is None
    delay = (j["scheduled_at"] - before).total_seconds()
    assert 0.85 <= delay <= 1.6
    [entry] = j["errors"]
    assert set(entry) == {"at", "attempt", "error", "trace"}
    assert entry["attempt"] == 1 and entry["error"] == "ValueError: boom"
    assert entry["at"].endswith("Z") and "T" in entry["at"]


def test_second_error_goes_retryable_and_last_attempt_discards(url: str) -> None:
    [jid] = insert(url, "fail", max_attempts=3)
    # Pretend one error already happened: the next backoff is 2^4 = 16 s -> retryable.
    query(
        url,
        """UPDATE metadata.river_job SET errors = ARRAY['{"at":"x","attempt":1,"error":"e","trace":""}'::jsonb],
                  attempt = 1 WHERE id = %s""",
        (jid,),
    )
    with InProcessRunner(url, registry):
        wait_for(lambda: state_of(url, jid) == "retryable", what="retryable")
        j = job(url, jid)
        assert 13 <= (j["scheduled_at"] - datetime.now(UTC)).total_seconds() <= 18
        # Make it due and on its last attempt: it must be discarded, with a third error entry.
        query(url, "UPDATE metadata.river_job SET state='available', scheduled_at=now(), attempt=2 WHERE id=%s", (jid,))
        query(url, "SELECT pg_notify('metadata.river_insert', '{\"queue\":\"default\"}')")
        wait_for(lambda: state_of(url, jid) == "discarded", what="discarded")
    j = job(url, jid)
    assert j["attempt"] == 3 and j["finalized_at"] is not None and len(j["errors"]) == 3


def test_permanent_error_discards_at_once(url: str) -> None:
    [jid] = insert(url, "permanent", max_attempts=25)
    with InProcessRunner(url, registry):
        wait_for(lambda: state_of(url, jid) == "discarded", what="discarded")
    j = job(url, jid)
    assert j["attempt"] == 1 and j["errors"][0]["error"] == "this input can never succeed"


def test_worker_cancel(url: str) -> None:
    [jid] = insert(url, "cancel")
    with InProcessRunner(url, registry):
        wait_for(lambda: state_of(url, jid) == "cancelled", what="cancelled")
    assert job(url, jid)["errors"][0]["error"] == "JobCancelError: no longer wanted"


def test_snooze_uses_no_attempt(url: str) -> None:
    [jid] = insert(url, "snooze", {"times": 2, "seconds": 0.05})
    with InProcessRunner(url, registry, fetch_poll_interval=0.05):
        wait_for(lambda: state_of(url, jid) == "completed", what="completed after snoozes")
    j = job(url, jid)
    assert j["metadata"]["snoozes"] == 2 and j["attempt"] == 1 and j["errors"] is None


def test_long_snooze_is_scheduled_then_scheduler_makes_it_available(url: str) -> None:
    [jid] = insert(url, "snooze", {"times": 1, "seconds": 6})
    with InProcessRunner(url, registry, scheduler_interval=0.5, elect_interval=0.2):
        wait_for(lambda: state_of(url, jid) == "scheduled", what="scheduled")
        wait_for(lambda: state_of(url, jid) == "completed", timeout=15, what="completed after scheduler")


def test_unknown_kind_is_retried_with_river_message(url: str) -> None:
    [jid] = insert(url, "no_such_kind")
    with InProcessRunner(url, registry):
        wait_for(lambda: job(url, jid)["errors"], what="error")
    j = job(url, jid)
    assert j["errors"][0]["error"] == "job kind is not registered in the client's Workers bundle: no_such_kind"
    assert j["state"] in ("available", "retryable")


def test_malformed_rows_get_errors_and_runner_keeps_going(url: str) -> None:
    bad_args = insert(url, "echo", ["not", "an", "object"])[0]
    scalar_meta = insert(url, "fail", metadata=psycopg.types.json.Jsonb("just a string"))[0]
    null_args = insert(url, "echo", None)[0]
    query(url, "UPDATE metadata.river_job SET args = 'null'::jsonb WHERE id = %s", (null_args,))
    good = insert(url, "echo", {"value": 1})[0]
    with InProcessRunner(url, registry):
        wait_for(lambda: state_of(url, good) == "completed", what="good job completed")
        wait_for(lambda: state_of(url, bad_args) == "discarded", what="bad args discarded")
        wait_for(lambda: job(url, scalar_meta)["errors"], what="scalar metadata job errored")
        wait_for(lambda: state_of(url, null_args) == "discarded", what="null args discarded")
    assert "args must be a JSON object, got list" in job(url, bad_args)["errors"][0]["error"]


def test_job_timeout(url: str) -> None:
    [jid] = insert(url, "quick_timeout")
    with InProcessRunner(url, registry):
        wait_for(lambda: job(url, jid)["errors"], what="timeout error")
    assert "JobTimeoutError" in job(url, jid)["errors"][0]["error"]


def test_cancel_running_job_through_control_channel(url: str) -> None:
    [jid] = insert(url, "sleep", {"seconds": 30})
    with InProcessRunner(url, registry):
        wait_for(lambda: state_of(url, jid) == "running", what="running")
        with psycopg.connect(url, autocommit=True) as conn:
            Admin(conn, "metadata").cancel(jid)
        wait_for(lambda: state_of(url, jid) == "cancelled", timeout=5, what="cancelled")
    j = job(url, jid)
    assert j["errors"][0]["error"] == "JobCancelError: job cancelled remotely"
    assert "cancel_attempted_at" in j["metadata"]


def test_manual_cancel_and_retry_of_waiting_jobs(url: str) -> None:
    [jid] = insert(url, "echo", {"value": 1}, scheduled_at=datetime.now(UTC) + timedelta(hours=1), state="scheduled")
    with psycopg.connect(url, autocommit=True) as conn:
        admin = Admin(conn, "metadata")
        row = admin.cancel(jid)
        assert row and row["state"] == "cancelled" and row["finalized_at"] is not None
        again = admin.retry(jid)
        assert again and again["state"] == "available" and again["finalized_at"] is None
    with InProcessRunner(url, registry):
        wait_for(lambda: state_of(url, jid) == "completed", what="completed after retry")


def test_retry_of_exhausted_job_adds_an_attempt(url: str) -> None:
    [jid] = insert(url, "permanent", max_attempts=1)
    with InProcessRunner(url, registry):
        wait_for(lambda: state_of(url, jid) == "discarded", what="discarded")
    with psycopg.connect(url, autocommit=True) as conn:
        row = Admin(conn, "metadata").retry(jid)
    assert row and row["max_attempts"] == 2 and row["attempt"] == 1


def test_graceful_shutdown_finishes_short_jobs_and_returns_long_ones(url: str) -> None:
    short = insert(url, "sleep", {"seconds": 0.5}, count=2)
    long = insert(url, "sleep", {"seconds": 60}, count=2)
    r = InProcessRunner(url, registry, shutdown_grace=1.5).start()
    wait_for(
        lambda: query(url, "SELECT count(*) FROM metadata.river_job WHERE state='running'")[0][0] == 4, what="4 running"
    )
    r.stop()
    for jid in short:
        assert state_of(url, jid) == "completed"
    for jid in long:
        j = job(url, jid)
        assert j["state"] == "available" and j["attempt"] == 0 and j["errors"] is None


def test_exit_when_idle(url: str) -> None:
    insert(url, "echo", {"value": 1}, count=20)
    r = InProcessRunner(url, registry, exit_when_idle=True, idle_exit_after=0.5, fetch_poll_interval=0.2)
    r.start()
    r.join(20)
    assert r.exit_code == 0
    assert query(url, "SELECT count(*) FROM metadata.river_job WHERE state='completed'")[0][0] == 20


def test_priority_order_and_queue_isolation(url: str) -> None:
    low = insert(url, "record", {}, priority=4)[0]
    high = insert(url, "record", {}, priority=1)[0]
    other = insert(url, "record", {}, queue="other")[0]
    import os

    os.environ["TEST_RECORD_URL"] = url
    with InProcessRunner(url, registry, queues="default=1"):
        wait_for(lambda: state_of(url, low) == "completed", what="both completed")
    order = [r[0] for r in query(url, "SELECT job_id FROM test_runs ORDER BY at")]
    assert order == [high, low]
    assert state_of(url, other) == "available"


def test_poll_only_mode_without_listen(url: str) -> None:
    with InProcessRunner(url, registry, poll_only=True, fetch_poll_interval=0.1) as r:
        assert r.runner.notifier is None
        [jid] = insert(url, "echo", {"value": 1})
        wait_for(lambda: state_of(url, jid) == "completed", what="completed by polling")


def test_insert_notification_wakes_idle_runner_fast(url: str) -> None:
    with InProcessRunner(url, registry, fetch_poll_interval=30):
        [jid] = insert(url, "echo", {"value": 1})
        wait_for(lambda: state_of(url, jid) == "completed", timeout=2, what="completed via LISTEN")
    j = job(url, jid)
    created = query(url, "SELECT finalized_at - created_at FROM metadata.river_job WHERE id=%s", (jid,))[0][0]
    assert created.total_seconds() < 0.5, created
    assert j["metadata"] == {"output": 1}
