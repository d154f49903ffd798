"""The reindexer as River's leader runs it, on a real PostgreSQL: `REINDEX INDEX CONCURRENTLY` of River's
river_job indexes one at a time under a timeout, leftovers of a failed concurrent reindex (`<index>_ccnew`,
invalid) dropped on the next run, missing indexes skipped, a role that may not reindex told once, and only
the leader running it on its schedule."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from civic_runner.metrics import REGISTRY
from civic_runner.reindexer import DEFAULT_INDEXES, IndexResult, Reindexer
from psycopg_pool import AsyncConnectionPool

from tests.support.harness import InProcessRunner, insert, migrate, query, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.integration


@pytest.fixture
def url(db_url: str) -> str:
    migrate(db_url)
    insert(db_url, "noop", {"n": 1}, count=200, metadata=psycopg.types.json.Jsonb({"m": 1}))
    return db_url


def filenodes(url: str) -> dict[str, int]:
    """Each index's file: a rebuild gives it a new one."""
    rows = query(
        url,
        """SELECT c.relname, pg_relation_filenode(c.oid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = 'metadata.river_job'::regclass""",
    )
    return {r[0]: r[1] for r in rows}


def indexes(url: str) -> dict[str, bool]:
    """river_job's indexes and whether each is valid."""
    rows = query(
        url,
        """SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = 'metadata.river_job'::regclass""",
    )
    return {r[0]: r[1] for r in rows}


def run_once(url: str, names: tuple[str, ...] = DEFAULT_INDEXES, timeout: float = 60.0, **kw: Any) -> list[IndexResult]:
    async def go() -> list[IndexResult]:
        async with AsyncConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False) as pool:
            return await Reindexer(pool, "metadata", names, timeout, lambda: True, **kw).run_once()

    return asyncio.run(go())


def counted(index: str, result: str) -> float:
    return REGISTRY.get_sample_value("civic_runner_reindex_total", {"index": index, "result": result}) or 0.0


def test_every_default_index_is_rebuilt(url: str) -> None:
    assert set(DEFAULT_INDEXES) <= set(indexes(url)), "River's seven river_job indexes at 6+"
    before = filenodes(url)
    ok = counted("river_job_args_index", "ok")
    results = run_once(url)
    assert [(r.index, r.result) for r in results] == [(name, "ok") for name in DEFAULT_INDEXES]
    after = filenodes(url)
    assert all(after[name] != before[name] for name in DEFAULT_INDEXES), (before, after)
    assert all(indexes(url).values()) and set(indexes(url)) == set(before), "nothing left behind"
    assert counted("river_job_args_index", "ok") == ok + 1


def test_a_failed_concurrent_reindex_leaves_ccnew_and_the_next_run_drops_it(url: str, caplog: Any) -> None:
    # A writer's open transaction: REINDEX CONCURRENTLY builds its copy (`_ccnew`), then waits for it, and
    # times out there, leaving the copy behind, invalid (PostgreSQL's documented failure mode).
    with psycopg.connect(url) as writer:
        writer.execute("UPDATE metadata.river_job SET priority = priority WHERE id = 1")
        before = counted("river_job_kind", "timeout")
        [r] = run_once(url, ("river_job_kind",), timeout=0.5)
        assert r.result == "timeout" and r.dropped == [], r
        # While the writer stays, the next run times out too: dropping the copy concurrently waits for it.
        [r] = run_once(url, ("river_job_kind",), timeout=0.5)
        assert r.result == "timeout" and r.dropped == [], r
        assert counted("river_job_kind", "timeout") == before + 2
        # An invalid index with a numeric suffix, as PostgreSQL names a second copy while the first exists
        # (here made by a CREATE INDEX CONCURRENTLY that times out the same way).
        with psycopg.connect(url, autocommit=True) as other:
            other.execute("SET statement_timeout = 500")
            with pytest.raises(psycopg.errors.QueryCanceled):
                other.execute("CREATE INDEX CONCURRENTLY river_job_kind_ccnew1 ON metadata.river_job (kind)")
        writer.rollback()
    left = {name: valid for name, valid in indexes(url).items() if "_cc" in name}
    assert left == {"river_job_kind_ccnew": False, "river_job_kind_ccnew1": False}, indexes(url)

    node = filenodes(url)["river_job_kind"]
    with caplog.at_level(logging.INFO, logger="civic_runner.reindexer"):
        [r] = run_once(url, ("river_job_kind",))
    assert r.result == "ok" and sorted(r.dropped) == ["river_job_kind_ccnew", "river_job_kind_ccnew1"], r
    assert not [n for n in indexes(url) if "_cc" in n] and all(indexes(url).values())
    assert filenodes(url)["river_job_kind"] != node
    dropped = [rec for rec in caplog.records if "leftover" in rec.getMessage()]
    assert {getattr(rec, "leftover", None) for rec in dropped} == {"river_job_kind_ccnew", "river_job_kind_ccnew1"}
    assert any("rebuilt index" in rec.getMessage() for rec in caplog.records)


def test_a_missing_index_is_logged_and_skipped(url: str, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, logger="civic_runner.reindexer"):
        results = run_once(url, ("no_such_index", "river_job_kind"))
    assert [(r.index, r.result) for r in results] == [("no_such_index", "missing"), ("river_job_kind", "ok")]
    assert any(
        "not found" in rec.getMessage() and getattr(rec, "index", "") == "no_such_index" for rec in caplog.records
    )


def test_a_role_that_may_not_reindex_is_told_once_and_the_run_stops(url: str, caplog: Any) -> None:
    role = "reindex_probe"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA metadata TO {role}")
        conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA metadata TO {role}")
    try:
        with caplog.at_level(logging.WARNING, logger="civic_runner.reindexer"):
            results = run_once(url.replace("postgres@", f"{role}@"))
        assert [r.result for r in results] == ["denied"], results
        warned = [rec for rec in caplog.records if "may not reindex" in rec.getMessage()]
        assert len(warned) == 1
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_only_a_leader_runs_it_on_its_schedule(url: str) -> None:
    before = filenodes(url)["river_job_kind"]
    leader = False

    async def serve_a_while(is_leader: Callable[[], bool]) -> None:
        async with AsyncConnectionPool(url, min_size=1, max_size=2, kwargs={"autocommit": True}, open=False) as pool:
            task = asyncio.create_task(Reindexer(pool, "metadata", ("river_job_kind",), 60, is_leader).serve(1.0))
            await asyncio.sleep(2.5)  # two scheduled times (every whole second)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(serve_a_while(lambda: leader))
    assert filenodes(url)["river_job_kind"] == before, "a follower never reindexes"
    leader = True
    asyncio.run(serve_a_while(lambda: leader))
    assert filenodes(url)["river_job_kind"] != before


def test_the_runners_leader_reindexes_with_the_settings(url: str) -> None:
    before = filenodes(url)
    settings = {"reindex_interval": 1.0, "reindex_indexes": "river_job_kind", "elect_interval": 0.2}
    with InProcessRunner(url, registry, **settings):
        wait_for(lambda: filenodes(url)["river_job_kind"] != before["river_job_kind"], timeout=10, what="reindexed")
    after = filenodes(url)
    assert after["river_job_args_index"] == before["river_job_args_index"], "only the configured indexes"
    with InProcessRunner(url, registry, reindex_interval=1.0, reindexer=False, elect_interval=0.2):
        time.sleep(2.5)
    assert filenodes(url) == after, "CIVIC_REINDEXER=false: never"
