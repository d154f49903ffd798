"""Table tests of the pure mapping from a run's outcome to River's row changes."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from civic_runner.job import Job, JobState, pg_micros
from civic_runner.outcome import Ending, Outcome, go_time, plan_completion
from civic_runner.retry import backoff_seconds

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
START = NOW - timedelta(seconds=2)


def make_job(attempt: int = 1, max_attempts: int = 25, errors: int = 0, metadata: object = None) -> Job:
    return Job(
        id=7,
        kind="k",
        queue="q",
        args_json="{}",
        attempt=attempt,
        max_attempts=max_attempts,
        priority=1,
        metadata_json=json.dumps({} if metadata is None else metadata),
        error_count=errors,
        attempted_us=pg_micros(START),
        scheduled_us=pg_micros(START),
        created_us=pg_micros(START),
    )


@pytest.mark.parametrize(
    ("ending", "job_kw", "state", "finalize", "attempt"),
    [
        (Ending.COMPLETED, {}, JobState.COMPLETED, True, None),
        (Ending.CANCEL, {}, JobState.CANCELLED, True, None),
        (Ending.DISCARD, {}, JobState.DISCARDED, True, None),
        (Ending.ERROR, {"attempt": 25, "max_attempts": 25}, JobState.DISCARDED, True, None),
        (Ending.ERROR, {"attempt": 1, "errors": 0}, JobState.AVAILABLE, False, None),  # 1 s: within 5 s
        (Ending.ERROR, {"attempt": 2, "errors": 1}, JobState.RETRYABLE, False, None),  # 16 s
        (Ending.INTERRUPT, {"attempt": 3}, JobState.AVAILABLE, False, 2),
        (Ending.INTERRUPT, {"attempt": 0}, JobState.AVAILABLE, False, 0),
    ],
)
def test_state_table(ending: Ending, job_kw: dict, state: JobState, finalize: bool, attempt: int | None) -> None:
    c = plan_completion(
        make_job(**job_kw), Outcome(ending, message="m"), started_at=START, now=NOW, rand=random.Random(1)
    )
    assert (c.state, c.finalize, c.attempt) == (state, finalize, attempt)


def test_error_entry_shape_and_cancel_prefix() -> None:
    c = plan_completion(make_job(attempt=3), Outcome(Ending.CANCEL, message="stop"), started_at=START, now=NOW)
    assert c.error == {"at": go_time(START), "attempt": 3, "error": "JobCancelError: stop", "trace": ""}


def test_interrupt_records_no_error_and_is_due_now() -> None:
    c = plan_completion(make_job(), Outcome(Ending.INTERRUPT), started_at=START, now=NOW)
    assert c.error is None and c.scheduled_at == NOW


@pytest.mark.parametrize(
    ("seconds", "state", "prior", "metadata"),
    [
        (1.0, JobState.AVAILABLE, {}, {"snoozes": 1}),
        (5.0, JobState.AVAILABLE, {"snoozes": 2}, {"snoozes": 3}),
        (60.0, JobState.SCHEDULED, {"snoozes": 0}, {"snoozes": 1}),
        (60.0, JobState.SCHEDULED, "not an object", {"snoozes": 1}),
    ],
)
def test_snooze(seconds: float, state: JobState, prior: object, metadata: dict) -> None:
    c = plan_completion(
        make_job(attempt=2, metadata=prior), Outcome(Ending.SNOOZE, snooze_seconds=seconds), started_at=START, now=NOW
    )
    assert c.state == state and c.attempt == 1 and c.error is None
    assert c.scheduled_at == NOW + timedelta(seconds=seconds)
    assert c.metadata_updates == metadata


def test_completed_output_goes_to_metadata() -> None:
    c = plan_completion(make_job(), Outcome(Ending.COMPLETED, output={"a": 1}), started_at=START, now=NOW)
    assert c.metadata_updates == {"output": {"a": 1}}
    c = plan_completion(make_job(), Outcome(Ending.COMPLETED), started_at=START, now=NOW)
    assert c.metadata_updates is None


@pytest.mark.parametrize(("errors", "base"), [(0, 1), (1, 16), (2, 81), (3, 256), (9, 10_000)])
def test_backoff_is_errors_plus_one_to_the_fourth_with_10pct_jitter(errors: int, base: int) -> None:
    rand = random.Random(42)
    samples = [backoff_seconds(errors, rand) for _ in range(500)]
    assert all(base * 0.9 <= s <= base * 1.1 for s in samples)
    assert max(samples) - min(samples) > base * 0.1  # jitter is really applied


def test_backoff_caps_without_jitter() -> None:
    assert backoff_seconds(10_000) == backoff_seconds(20_000)


def test_default_retries_sum_to_about_twenty_days() -> None:
    total = sum((n + 1) ** 4 for n in range(24))
    assert abs(total / 86400 - 20.4) < 0.1


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC), "2026-01-02T03:04:05.123456Z"),
        (datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC), "2026-01-02T03:04:05.12Z"),
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05Z"),
        (datetime(2026, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))), "2026-01-02T03:04:05Z"),
    ],
)
def test_go_time(ts: datetime, expected: str) -> None:
    assert go_time(ts) == expected
