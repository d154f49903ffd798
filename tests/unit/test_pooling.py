"""Which connection gets LISTEN and the insert watcher, and when a URL counts as transaction-pooled."""

from __future__ import annotations

import pytest
from civic_runner.config import RunnerConfig, from_env
from civic_runner.pooling import behind_pooler, check_mode, plan_connections, pooled

pytestmark = pytest.mark.unit

DB, LISTEN = "postgresql://u@pgbouncer:6432/civic", "postgresql://u@db:5432/civic"


@pytest.mark.parametrize(
    ("key_pid", "server_pid", "expected"),
    [(4242, 4242, False), (827697332, 2314, True), (0, 17, True)],
)
def test_a_pooler_is_a_cancel_key_that_is_not_the_backend(key_pid: int, server_pid: int, expected: bool) -> None:
    assert behind_pooler(key_pid, server_pid) is expected


@pytest.mark.parametrize(
    ("mode", "detected", "expected"),
    [
        ("transaction", False, True),  # declared: whatever the detection says
        ("transaction", None, True),
        ("session", True, False),  # a session pooler keeps everything a session holds
        ("auto", True, True),
        ("auto", False, False),
        ("auto", None, True),  # not known yet: nothing session-scoped on a guess
    ],
)
def test_pooled(mode: str, detected: bool | None, expected: bool) -> None:
    assert pooled(mode, detected) is expected


@pytest.mark.parametrize(
    ("mode", "db_pooled", "listen_url", "poll_only", "watch", "want_listen", "want_watcher", "note"),
    [
        # direct database: LISTEN and the watcher on DATABASE_URL, as before
        ("auto", False, "", False, 0.002, DB, True, None),
        ("auto", False, "", False, 0.0, DB, False, None),  # watcher turned off
        # through a transaction pooler without a listen URL: poll only, and the log says how to fix it
        ("auto", True, "", False, 0.002, None, False, "DATABASE_LISTEN_URL"),
        ("transaction", True, "", False, 0.002, None, False, "set by CIVIC_DB_POOLER"),
        # with a direct listen URL: both there
        ("auto", True, LISTEN, False, 0.002, LISTEN, True, "on DATABASE_LISTEN_URL"),
        ("transaction", True, LISTEN, False, 0.0, LISTEN, False, "on DATABASE_LISTEN_URL"),
        # a listen URL on a direct database is used too (e.g. another role for LISTEN)
        ("session", False, LISTEN, False, 0.002, LISTEN, True, None),
        # poll-only wins over everything
        ("auto", False, LISTEN, True, 0.002, None, False, "CIVIC_POLL_ONLY"),
        ("transaction", True, LISTEN, True, 0.002, None, False, "CIVIC_POLL_ONLY"),
    ],
)
def test_plan_connections(
    mode: str,
    db_pooled: bool,
    listen_url: str,
    poll_only: bool,
    watch: float,
    want_listen: str | None,
    want_watcher: bool,
    note: str | None,
) -> None:
    plan = plan_connections(
        mode=mode,
        database_url_pooled=db_pooled,
        database_url=DB,
        listen_url=listen_url,
        poll_only=poll_only,
        watch_interval=watch,
    )
    assert (plan.listen_url, plan.watcher) == (want_listen, want_watcher)
    if note is None:
        assert plan.notes == []
    else:
        assert any(note in n for n in plan.notes), plan.notes


def test_session_mode_is_not_offered_when_the_pooler_was_declared() -> None:
    plan = plan_connections(
        mode="transaction", database_url_pooled=True, database_url=DB, listen_url="", poll_only=False, watch_interval=1
    )
    assert "CIVIC_DB_POOLER=session" not in plan.notes[0]


@pytest.mark.parametrize(
    ("raw", "expected"), [("auto", "auto"), (" Transaction ", "transaction"), ("session", "session")]
)
def test_check_mode(raw: str, expected: str) -> None:
    assert check_mode(raw) == expected


def test_settings_from_the_environment() -> None:
    values = from_env({"DATABASE_LISTEN_URL": LISTEN, "CIVIC_DB_POOLER": "Transaction"})
    cfg = RunnerConfig.from_values(values)
    assert (cfg.database_listen_url, cfg.db_pooler) == (LISTEN, "transaction")
    assert RunnerConfig.from_values(from_env({})).db_pooler == "auto"
    with pytest.raises(ValueError, match="CIVIC_DB_POOLER must be one of auto, session, transaction"):
        RunnerConfig.from_values(from_env({"CIVIC_DB_POOLER": "statement"}))
