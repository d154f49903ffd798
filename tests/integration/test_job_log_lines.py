"""What `kubectl logs` shows per job, from a real runner process: a line per completion within
CIVIC_JOB_LOG_RATE, a `jobs completed` summary counting the rest, every failure on its own line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.harness import RunnerProcess, insert, migrate, query, wait_for

pytestmark = pytest.mark.integration


def events(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def done(url: str) -> int:
    return int(query(url, "SELECT count(*) FROM metadata.river_job WHERE state IN ('completed', 'discarded')")[0][0])


def test_completions_beyond_the_rate_are_counted_and_every_failure_is_logged(db_url: str, tmp_path: Path) -> None:
    migrate(db_url)
    log = tmp_path / "runner.log"
    env = {"CIVIC_JOB_LOG_RATE": "5", "CIVIC_JOB_LOG_SUMMARY_INTERVAL": "1", "CIVIC_QUEUES": "default=50"}
    runner = RunnerProcess(db_url, env=env, log_path=log).start()
    try:
        wait_for(lambda: log.exists() and "runner started" in log.read_text(), 30, what="runner started")
        insert(db_url, "noop", count=400)
        insert(db_url, "fail", count=3, max_attempts=1)
        wait_for(lambda: done(db_url) == 403, 60, what="all jobs ran")
        # the summary of the last completions is written at the next interval, or on the way out
    finally:
        assert runner.terminate() == 0
    evs = events(log)
    each = [e for e in evs if e["event"] == "job completed"]
    summaries = [e for e in evs if e["event"] == "jobs completed"]
    failed = [e for e in evs if e["event"] == "job failed"]
    assert 5 <= len(each) <= 5 + 5 * 60, len(each)  # the first burst, then 5 a second at most
    assert len(failed) == 3  # failures are never folded
    assert summaries, "no summary line"
    assert sum(int(str(s["not_logged_each"])) for s in summaries) + len(each) == 400
    assert all(s["kinds"] == {"noop": s["not_logged_each"]} for s in summaries), summaries


def test_every_job_has_its_line_when_asked(db_url: str, tmp_path: Path) -> None:
    migrate(db_url)
    log = tmp_path / "runner.log"
    runner = RunnerProcess(db_url, env={"CIVIC_JOB_LOG_RATE": "-1"}, log_path=log).start()
    try:
        insert(db_url, "noop", count=100)
        wait_for(lambda: done(db_url) == 100, 60, what="all jobs ran")
    finally:
        assert runner.terminate() == 0
    evs = events(log)
    assert len([e for e in evs if e["event"] == "job completed"]) == 100
    assert not [e for e in evs if e["event"] == "jobs completed"]
