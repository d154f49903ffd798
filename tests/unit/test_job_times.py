"""A claimed job's times: PostgreSQL's binary microseconds kept as claimed, datetimes built on demand."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone

import pytest
from civic_runner.job import Job, pg_micros, pg_time

pytestmark = pytest.mark.unit

INT64_MAX, INT64_MIN = 2**63 - 1, -(2**63)  # what PostgreSQL sends for infinity / -infinity


@pytest.mark.parametrize(
    ("us", "expected"),
    [
        (0, datetime(2000, 1, 1, tzinfo=UTC)),
        (1, datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)),
        (-1, datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        (
            pg_micros(datetime(2026, 12, 2, 23, 5, 6, 789012, tzinfo=UTC)),
            datetime(2026, 12, 2, 23, 5, 6, 789012, tzinfo=UTC),
        ),
        # Beyond Python's years: clamped a day inside, as the rescuer's py_time does in SQL.
        (INT64_MAX, datetime(9999, 12, 30, tzinfo=UTC)),
        (INT64_MIN, datetime(1, 1, 2, tzinfo=UTC)),
        (pg_micros(datetime(1, 1, 1, tzinfo=UTC)) - 10**12, datetime(1, 1, 2, tzinfo=UTC)),  # a year BC
    ],
)
def test_pg_time(us: int, expected: datetime) -> None:
    got = pg_time(us)
    assert got == expected and got.tzinfo is UTC


def test_pg_micros_is_postgres_wire_value() -> None:
    # timestamptz '2000-01-02 00:00:00+00' is sent in binary as 86,400,000,000.
    assert pg_micros(datetime(2000, 1, 2, tzinfo=UTC)) == 86_400_000_000
    assert pg_micros(datetime(2000, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == 0  # 01:00+01 is midnight UTC


def test_job_times_and_claim_lag() -> None:
    scheduled = datetime.now(UTC) - timedelta(seconds=3)
    j = Job(1, "k", "q", "{}", 1, 25, 1, "{}", 0, pg_micros(scheduled) + 5, pg_micros(scheduled), pg_micros(scheduled))
    assert j.scheduled_at == scheduled and j.created_at == scheduled
    assert j.attempted_at == scheduled + timedelta(microseconds=5)
    assert j.seconds_since_scheduled(time.time()) == pytest.approx(3.0, abs=0.05)
    assert j.seconds_since_scheduled(scheduled.timestamp()) == pytest.approx(0.0, abs=1e-6)
