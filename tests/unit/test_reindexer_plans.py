"""The reindexer's pure parts: River's schedule, which indexes are leftovers of a failed concurrent reindex,
the index list setting."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from civic_runner.config import RunnerConfig, from_env
from civic_runner.reindexer import DEFAULT_INDEXES, is_leftover, next_run_at, parse_index_names

pytestmark = pytest.mark.unit


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("now", "interval", "expected"),
    [
        # River's default: daily at 00:00 UTC, i.e. (now + 24 h) truncated to the day.
        (at(2026, 12, 1, 21, 30), 86400.0, at(2026, 12, 2)),
        (at(2026, 12, 1, 0, 0, 0), 86400.0, at(2026, 12, 2)),  # just ran: the next midnight, not now
        (at(2026, 12, 31, 23, 59, 59), 86400.0, at(2027, 1, 1)),
        (at(2026, 12, 1, 21, 30), 3600.0, at(2026, 12, 1, 22)),
        (at(2026, 12, 1, 21, 30, 5, 500000), 1.0, at(2026, 12, 1, 21, 30, 6)),
    ],
)
def test_next_run_at(now: datetime, interval: float, expected: datetime) -> None:
    assert next_run_at(now, interval) == expected


LONG = "river_job_a_very_long_index_name_that_postgresql_would_truncate_x"  # 65 characters


@pytest.mark.parametrize(
    ("name", "index", "leftover"),
    [
        ("river_job_kind_ccnew", "river_job_kind", True),
        ("river_job_kind_ccnew1", "river_job_kind", True),
        ("river_job_kind_ccnew12", "river_job_kind", True),
        ("river_job_kind_ccold", "river_job_kind", True),
        ("river_job_kind_ccold3", "river_job_kind", True),
        ("river_job_kind", "river_job_kind", False),
        ("river_job_kind_ccnewx", "river_job_kind", False),
        ("river_job_kind_cc", "river_job_kind", False),
        ("river_job_kind_extra_ccnew", "river_job_kind", False),  # another index's leftover
        ("river_job_ccnew", "river_job_kind", False),
        ("river_job_args_index_ccnew", "river_job_args_index", True),
        # PostgreSQL truncates the base so that the whole fits in 63 bytes.
        (LONG[:57] + "_ccnew", LONG, True),
        (LONG[:56] + "_ccnew1", LONG, True),
        (LONG[:50] + "_ccnew", LONG, False),  # short of 63: not a truncation of this index's name
    ],
)
def test_is_leftover(name: str, index: str, leftover: bool) -> None:
    assert is_leftover(name, index) is leftover


def test_index_list_setting() -> None:
    assert parse_index_names(" a, b,,c ,a") == ("a", "b", "c")
    assert parse_index_names(from_env({})["reindex_indexes"]) == DEFAULT_INDEXES
    assert len(DEFAULT_INDEXES) == 7 and "river_job_pkey" in DEFAULT_INDEXES


def test_reindexer_defaults_and_checks() -> None:
    cfg = RunnerConfig.from_values(from_env({}))
    assert (cfg.reindexer, cfg.reindex_interval, cfg.reindex_timeout) == (True, 86400.0, 60.0)
    assert from_env({"CIVIC_REINDEXER": "false"})["reindexer"] is False
    for env in ("CIVIC_REINDEX_INTERVAL", "CIVIC_REINDEX_TIMEOUT"):
        with pytest.raises(ValueError, match=env):
            RunnerConfig.from_values(from_env({env: "0"}))
