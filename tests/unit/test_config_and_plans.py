"""Configuration parsing, migration planning and rescuer decisions."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest
from civic_runner.config import RunnerConfig, default_client_id, from_env, parse_queues
from civic_runner.maintenance import plan_rescue
from civic_runner.migrate import CIVIC, LATEST, MAIN, load_line, plan_down, plan_up, render

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("default", {"default": 10}),
        ("s3_signer=20,thumbnails=3", {"s3_signer": 20, "thumbnails": 3}),
        (" a = 1 , b-c=2 ", {"a": 1, "b-c": 2}),
    ],
)
def test_parse_queues(spec: str, expected: dict[str, int]) -> None:
    assert parse_queues(spec) == expected


@pytest.mark.parametrize("spec", ["", "Upper=1", "a=0", "a=10001", "a__b=1", "-a=1", "x" * 65])
def test_parse_queues_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_queues(spec)


def test_env_then_defaults() -> None:
    v = from_env(
        {"DATABASE_URL": "postgresql://x/y", "DB_MAX_CONNS": "3", "CIVIC_POLL_ONLY": "yes", "RIVER_SCHEMA": "river"}
    )
    assert (v["database_url"], v["db_max_conns"], v["poll_only"], v["schema"]) == ("postgresql://x/y", 3, True, "river")
    assert from_env({})["fetch_poll_interval"] == 1.0


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="DB_MAX_CONNS"):
        from_env({"DB_MAX_CONNS": "many"})


def test_config_requires_two_connections() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        RunnerConfig.from_values({"db_max_conns": 1})


def test_default_client_id_like_river() -> None:
    cid = default_client_id("pod.example.local", datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC))
    assert cid == "pod_example_local_2026_01_02T03_04_05_000006"


def test_migration_files_and_plans() -> None:
    main = load_line(MAIN)
    assert [m.version for m in main] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert main[-1].version == LATEST[MAIN] and main[-1].name == "job_id_autoincrement"
    assert all(m.up and m.down for m in main + load_line(CIVIC))
    assert [m.version for m in plan_up(4, 7, main)] == [5, 6, 7]
    assert [m.version for m in plan_up(7, 8, main)] == [8]
    assert [m.version for m in plan_up(7, 6, main)] == []
    assert [m.version for m in plan_down(8, 5, main)] == [8, 7, 6]


def test_migration_8_is_a_no_op_on_postgres() -> None:
    """River's 008 rebuilds river_job on SQLite only: on PostgreSQL both directions are `SELECT 1`."""
    m = load_line(MAIN)[7]
    for sql in (m.up, m.down):
        statements = [line for line in sql.splitlines() if line.strip() and not line.lstrip().startswith("--")]
        assert statements == ["SELECT 1;"]


def test_render_quotes_schema_and_channel() -> None:
    out = render("CREATE TABLE __SCHEMA__.t (); SELECT pg_notify(__CHANNEL__, '');", "we'ird \"s")
    assert '"we\'ird ""s".t' in out
    assert "'we''ird \"s.river_insert'" in out


NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("row", "state"),
    [
        ({"kind": "k", "attempt": 1, "max_attempts": 3, "cancel_requested": False, "n_errors": 0}, "retryable"),
        ({"kind": "k", "attempt": 3, "max_attempts": 3, "cancel_requested": False, "n_errors": 2}, "discarded"),
        ({"kind": "k", "attempt": 1, "max_attempts": 3, "cancel_requested": True, "n_errors": 0}, "cancelled"),
        ({"kind": "k", "attempt": 3, "max_attempts": 3, "cancel_requested": True, "n_errors": 2}, "cancelled"),
        ({"kind": "unknown", "attempt": 1, "max_attempts": 3, "cancel_requested": False, "n_errors": 0}, "discarded"),
        ({"kind": "unknown", "attempt": 1, "max_attempts": 3, "cancel_requested": True, "n_errors": 0}, "cancelled"),
    ],
)
def test_plan_rescue(row: dict, state: str) -> None:
    got, at = plan_rescue(row, {"k"}, NOW, random.Random(0))
    assert got == state
    assert (at is not None) == (state == "retryable")


def test_civic_os_thumbnail_workers_setting() -> None:
    assert from_env({"THUMBNAIL_MAX_WORKERS": "5"})["queues"] == "s3_signer=20,thumbnails=5"
    assert from_env({"THUMBNAIL_MAX_WORKERS": "5", "CIVIC_QUEUES": "a=1"})["queues"] == "a=1"
    assert parse_queues(from_env({})["queues"]) == {"s3_signer": 20, "thumbnails": 3}
