"""The producers' polls beside LISTEN (River v0.51.0/v0.51.1) and their queue row (QueueReportInterval):
a cancel or pause written without its notification (as when the listener was reconnecting) still takes
effect within the poll interval, and river_queue.updated_at stays fresh while the queue is served, so
River's queue cleaner (24 h) does not delete the row of a queue only Python runners serve."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

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


# -- 3. producers poll for cancel requests and pauses (0.51.0/0.51.1) --------------------------------------------


@pytest.fixture
def quick_polls() -> Iterator[dict[str, Any]]:
    # Notifications never carry these tests' requests: only the poll can see them.
    yield {"control_poll_interval": 0.3, "fetch_poll_interval": 30}


def test_cancel_request_without_notification_is_seen_by_the_poll(url: str, quick_polls: dict[str, Any]) -> None:
    [jid] = insert(url, "sleep", {"seconds": 60})
    with InProcessRunner(url, registry, **quick_polls):
        wait_for(lambda: state_of(url, jid) == "running", what="running")
        # What JobCancel writes, without its pg_notify (as if the listener had been reconnecting).
        query(
            url,
            """UPDATE metadata.river_job SET metadata = metadata || jsonb_build_object('cancel_attempted_at',
                      to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')) WHERE id = %s""",
            (jid,),
        )
        wait_for(lambda: state_of(url, jid) == "cancelled", timeout=5, what="cancelled by the poll")
    assert job(url, jid)["errors"][0]["error"] == "JobCancelError: job cancelled remotely"


def test_pause_and_resume_without_notification_are_seen_by_the_poll(url: str, quick_polls: dict[str, Any]) -> None:
    with InProcessRunner(url, registry, **quick_polls) as r:
        producer = r.runner.producers["default"]
        query(url, "UPDATE metadata.river_queue SET paused_at = now(), updated_at = now() WHERE name = 'default'")
        wait_for(lambda: producer.paused, timeout=5, what="paused by the poll")
        [jid] = insert(url, "echo", {"value": 1})  # notified: a paused queue must not claim it
        time.sleep(1.0)
        assert state_of(url, jid) == "available"
        query(url, "UPDATE metadata.river_queue SET paused_at = NULL, updated_at = now() WHERE name = 'default'")
        wait_for(lambda: state_of(url, jid) == "completed", timeout=5, what="completed after the resume")


# -- 4. river_queue.updated_at is refreshed while the queue is served ---------------------------------------------


def test_queue_row_is_refreshed_and_recreated_while_served(url: str) -> None:
    with InProcessRunner(url, registry, queue_report_interval=0.3):
        query(url, "UPDATE metadata.river_queue SET updated_at = now() - interval '2 days' WHERE name = 'default'")

        def fresh() -> bool:
            rows = query(
                url, "SELECT updated_at > now() - interval '1 minute' FROM metadata.river_queue WHERE name = 'default'"
            )
            return bool(rows and rows[0][0])

        wait_for(fresh, timeout=5, what="updated_at refreshed")
        # River's queue cleaner (or anyone) deleted the row: the next report writes it again.
        query(url, "DELETE FROM metadata.river_queue WHERE name = 'default'")
        wait_for(fresh, timeout=5, what="row written again")


def test_poll_only_runner_honours_a_cancel_within_two_seconds(url: str) -> None:
    """Without LISTEN no control notification ever arrives: the poll (at most every 2 s in poll-only mode,
    as River's poll-only producers re-read their queue) is what cancels the job."""

    [jid] = insert(url, "sleep", {"seconds": 60})
    with InProcessRunner(url, registry, poll_only=True, fetch_poll_interval=0.1) as r:
        assert r.runner.notifier is None
        wait_for(lambda: state_of(url, jid) == "running", what="running")
        with psycopg.connect(url, autocommit=True) as conn:
            Admin(conn, "metadata").cancel(jid)
        wait_for(lambda: state_of(url, jid) == "cancelled", timeout=5, what="cancelled by the poll")
