"""The compat tier on River v0.51.2's Go client (tests/interop/go): its inserts of every shape are
worked by our runner, our enqueues and Civic OS's triggers by a River Go worker; its JobCancel,
QueuePause/Resume and JobRetry act on our runner; it reads the retry schedule our runner writes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.compat.conftest import GoRiver
from tests.support.harness import ROOT, InProcessRunner, insert, job, migrate, query, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.compat


def go_time(s: str) -> datetime:
    """Go's RFC3339Nano (up to 9 fractional digits; Python reads 6)."""
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", s).replace("Z", "+00:00"))


def state(url: str, job_id: int) -> str:
    return str(query(url, "SELECT state::text FROM metadata.river_job WHERE id=%s", (job_id,))[0][0])


def all_completed(url: str, n: int) -> bool:
    return bool(query(url, "SELECT count(*) FROM metadata.river_job WHERE state='completed'")[0][0] == n)


@pytest.fixture
def recorded(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """River's tables at our latest, and the `record` kind writing to this database."""
    migrate(db_url)
    monkeypatch.setenv("TEST_RECORD_URL", db_url)
    return db_url


# -- River's inserts, worked by us ---------------------------------------------------------------------------


def test_go_priorities_are_claimed_in_rivers_order(recorded: str, go: GoRiver) -> None:
    ids = {p: go.insert("record", "--priority", str(p))[0]["id"] for p in (4, 2, 3, 1)}
    with InProcessRunner(recorded, registry, queues="default=1"):  # one at a time: claim order = run order
        wait_for(lambda: all_completed(recorded, 4), timeout=15, what="4 completed")
    assert [r[0] for r in query(recorded, "SELECT job_id FROM test_runs ORDER BY at")] == [ids[p] for p in (1, 2, 3, 4)]
    assert query(recorded, "SELECT id, priority FROM metadata.river_job ORDER BY id") == sorted(
        (i, p) for p, i in ids.items()
    )


def test_go_scheduled_job_runs_at_its_time_not_before(db_url: str, go: GoRiver) -> None:
    migrate(db_url)
    [j] = go.insert("echo", "--scheduled-in", "3s", "--args", '{"value": "later"}')
    assert state(db_url, j["id"]) == "scheduled"
    with InProcessRunner(db_url, registry, scheduler_interval=0.2):
        time.sleep(1.5)
        assert job(db_url, j["id"])["attempt"] == 0, "worked before its scheduled time"
        wait_for(lambda: state(db_url, j["id"]) == "completed", timeout=10, what="completed")
    r = job(db_url, j["id"])
    assert r["scheduled_at"] <= r["attempted_at"], r
    assert (r["attempted_at"] - r["scheduled_at"]).total_seconds() < 2, "the leader's scheduler released it late"


def test_go_tags_metadata_and_max_attempts_are_kept(db_url: str, go: GoRiver) -> None:
    migrate(db_url)
    [j] = go.insert(
        "echo", "--tags", "from-go,urgent", "--metadata", '{"origin": "go", "n": 1}', "--max-attempts", "3",
        "--args", '{"value": 7}',
    )  # fmt: skip
    with InProcessRunner(db_url, registry):
        wait_for(lambda: state(db_url, j["id"]) == "completed", timeout=10, what="completed")
    tags, metadata, max_attempts = query(
        db_url, "SELECT tags, metadata, max_attempts FROM metadata.river_job WHERE id=%s", (j["id"],)
    )[0]
    assert tags == ["from-go", "urgent"] and max_attempts == 3
    assert metadata["origin"] == "go" and metadata["n"] == 1 and metadata["output"] == 7, metadata
    seen = go.get(j["id"])  # and River reads back what we wrote
    assert seen["state"] == "completed" and seen["metadata"]["output"] == 7, seen
    assert seen["tags"] == ["from-go", "urgent"] and not seen["errors"]


def test_go_unique_by_args_is_one_job_worked_once(recorded: str, go: GoRiver) -> None:
    def unique(value: str) -> dict[str, Any]:
        [r] = go.insert("record", "--unique-by-args", "--args", json.dumps({"value": value}))
        return r

    a, again, b = unique("a"), unique("a"), unique("b")
    assert not a["duplicate"] and again == {"id": a["id"], "duplicate": True} and not b["duplicate"]
    with InProcessRunner(recorded, registry):
        wait_for(lambda: all_completed(recorded, 2), timeout=10, what="2 completed")
    # River's default unique states include `completed`: still a duplicate once we completed it, so the
    # runner kept the key and the states River wrote.
    assert unique("a") == {"id": a["id"], "duplicate": True}
    assert query(recorded, "SELECT count(*), count(unique_key) FROM metadata.river_job") == [(2, 2)]
    assert query(recorded, "SELECT DISTINCT unique_states::text FROM metadata.river_job") == [("11110101",)]
    assert sorted(r[0] for r in query(recorded, "SELECT job_id FROM test_runs")) == [a["id"], b["id"]]


def test_go_bulk_insert_is_completed_by_us(db_url: str, go: GoRiver) -> None:
    migrate(db_url)
    ids = [r["id"] for r in go.insert("echo", "--count", "50", "--args", '{"value": {"a": 1}}')]
    assert len(set(ids)) == 50
    with InProcessRunner(db_url, registry):
        wait_for(lambda: all_completed(db_url, 50), timeout=20, what="50 completed")
    assert query(db_url, "SELECT DISTINCT metadata->'output' FROM metadata.river_job") == [({"a": 1},)]


# -- our inserts, worked by River ----------------------------------------------------------------------------


def test_our_enqueues_wake_and_are_worked_by_a_river_go_worker(db_url: str, go: GoRiver, tmp_path: Path) -> None:
    migrate(db_url)
    # A 30 s poll: only our enqueue's NOTIFY can make the Go worker claim within seconds.
    worker = go.popen(
        "work", "--kinds", "record", "--id", "go-w", "--fetch-poll-interval", "30s", "--expect", "5",
        "--timeout", "40s", log=tmp_path / "go.log",
    )  # fmt: skip
    try:
        wait_for(lambda: query(db_url, "SELECT 1 FROM metadata.river_queue WHERE name='default'"), 15, 0.05, "Go up")
        time.sleep(0.5)  # its producer has fetched once (nothing) and listens
        r = subprocess.run(
            [sys.executable, "-m", "civic_runner.cli", "enqueue", "record", "--database-url", db_url, "--args",
             '{"n": 1}', "--count", "5", "--priority", "2", "--tag", "from-python", "--max-attempts", "3"],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert worker.wait(40) == 0, (tmp_path / "go.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    # From the insert's commit to River's claim, by the database's clock (no process start-up in it).
    [(wake,)] = query(db_url, "SELECT extract(epoch FROM max(attempted_at) - min(created_at)) FROM metadata.river_job")
    assert wake < 2, f"{wake:.1f} s: the Go worker was not woken by our NOTIFY"
    rows = query(
        db_url, "SELECT DISTINCT state::text, priority, tags, max_attempts, attempted_by FROM metadata.river_job"
    )
    assert rows == [("completed", 2, ["from-python"], 3, ["go-w"])]
    assert query(db_url, "SELECT count(*) FROM metadata.interop_worked WHERE worker='go-w' AND attempt=1") == [(5,)]


def test_trigger_jobs_are_completed_by_a_river_go_worker(db_url: str, go: GoRiver) -> None:
    migrate(db_url, civic=True)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(5):
            conn.execute(
                "INSERT INTO metadata.file_upload_requests (entity_type, entity_id, file_name, file_type) "
                "VALUES ('issues', %s, 'a.png', 'image/png')",
                (str(i),),
            )
    r = go.run("work", "--queue", "s3_signer", "--kinds", "s3_presign", "--timeout", "60s", timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert query(db_url, "SELECT count(*) FROM metadata.interop_worked WHERE kind = 's3_presign'")[0][0] == 5
    assert query(db_url, "SELECT state::text, count(*) FROM metadata.river_job GROUP BY 1") == [("completed", 5)]


# -- River's controls, obeyed by us --------------------------------------------------------------------------


def test_go_job_cancel_stops_our_running_job(db_url: str, go: GoRiver) -> None:
    migrate(db_url)
    with InProcessRunner(db_url, registry):
        [jid] = insert(db_url, "sleep", {"seconds": 60})
        wait_for(lambda: state(db_url, jid) == "running", timeout=10, what="running")
        t0 = time.monotonic()
        requested = go("cancel", "--id", str(jid))
        assert requested["state"] == "running" and "cancel_attempted_at" in requested["metadata"], requested
        wait_for(lambda: state(db_url, jid) == "cancelled", timeout=5, what="cancelled by River's JobCancel")
        elapsed = time.monotonic() - t0
    assert elapsed < 2, f"cancel took {elapsed:.1f} s (the notification should act at once)"
    seen = go.get(jid)
    assert seen["state"] == "cancelled" and seen["finalized_at"] and seen["attempt"] == 1, seen


def test_our_jobs_cancel_stops_a_job_a_river_go_worker_is_running(db_url: str, go: GoRiver, tmp_path: Path) -> None:
    """The other direction: `civic-runner jobs cancel` sends River's control notification, and River's
    producer cancels the job's context."""
    migrate(db_url)
    [jid] = insert(db_url, "record", {"sleep": 60})
    worker = go.popen("work", "--kinds", "record", "--id", "go-w", "--timeout", "40s", log=tmp_path / "go.log")
    try:
        wait_for(lambda: state(db_url, jid) == "running", timeout=15, what="Go runs it")
        t0 = time.monotonic()
        r = subprocess.run(
            [sys.executable, "-m", "civic_runner.cli", "jobs", "cancel", str(jid), "--database-url", db_url],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: state(db_url, jid) == "cancelled", timeout=5 + (time.monotonic() - t0), what="cancelled")
        assert worker.wait(30) == 0, (tmp_path / "go.log").read_text()
    finally:
        if worker.poll() is None:
            worker.kill()
    # From our cancel request to River's ending, by the database's clock (no process start-up in it).
    [(took,)] = query(
        db_url,
        "SELECT extract(epoch FROM finalized_at - (metadata->>'cancel_attempted_at')::timestamptz) "
        "FROM metadata.river_job WHERE id = %s",
        (jid,),
    )
    assert took < 2, f"{took:.1f} s"
    seen = go.get(jid)
    assert seen["attempted_by"] == ["go-w"] and seen["finalized_at"], seen
    assert query(db_url, "SELECT count(*) FROM metadata.interop_worked") == [(0,)], "the Go worker did not finish it"


@pytest.mark.parametrize("queue", ["default", "*"])
def test_go_queue_pause_and_resume_are_obeyed(db_url: str, go: GoRiver, queue: str) -> None:
    migrate(db_url)
    with InProcessRunner(db_url, registry):
        go("pause", "--queue", queue)
        assert query(db_url, "SELECT paused_at IS NOT NULL FROM metadata.river_queue WHERE name='default'") == [(True,)]
        time.sleep(1.0)  # River's producers pause on the notification
        ids = insert(db_url, "echo", {"value": 1}, count=3)
        time.sleep(1.5)
        assert query(db_url, "SELECT DISTINCT state::text, attempt FROM metadata.river_job") == [("available", 0)]
        t0 = time.monotonic()
        go("resume", "--queue", queue)
        wait_for(lambda: all_completed(db_url, 3), timeout=5, what="worked after QueueResume")
        assert time.monotonic() - t0 < 2
    assert len(ids) == 3


def test_retry_schedule_we_write_is_rivers_when_read_from_go(db_url: str, go: GoRiver) -> None:
    """After each failure River decodes the errors we appended and finds the job due when its own
    DefaultClientRetryPolicy would have put it; JobRetry runs it again at once, until it is discarded."""
    migrate(db_url)
    [j] = go.insert("fail", "--max-attempts", "4")
    jid = j["id"]
    for attempt in range(1, 5):
        with InProcessRunner(db_url, registry):
            wait_for(
                lambda n=attempt: len(job(db_url, jid)["errors"] or []) == n, timeout=10, what=f"failure {attempt}"
            )
        seen = go.get(jid)
        assert seen["attempt"] == attempt and [e["attempt"] for e in seen["errors"]] == list(range(1, attempt + 1))
        assert seen["errors"][-1]["error"] == "ValueError: boom", seen["errors"][-1]
        if attempt == 4:
            assert seen["state"] == "discarded" and seen["finalized_at"], seen
            break
        # (errors before + 1)^4 s ± 10 %: 1 s (due within the scheduler's 5 s: available), 16 s, 81 s.
        assert seen["state"] == ("available" if attempt == 1 else "retryable"), seen
        delay = (go_time(seen["scheduled_at"]) - go_time(seen["errors"][-1]["at"])).total_seconds()
        policy = seen["retry_policy"]
        assert policy["min_seconds"] - 0.05 <= delay <= policy["max_seconds"] + 1.0, (delay, policy)
        assert go("retry", "--id", str(jid))["state"] == "available"
