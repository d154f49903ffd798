"""Migrations against a real PostgreSQL: River's catalog object for object, idempotence,
detection of existing versions, concurrency, down migrations, and the Civic OS line."""

from __future__ import annotations

import json
import threading
from typing import Any

import psycopg
import pytest
from civic_runner.migrate import CIVIC, MAIN, Migrator, load_line

from tests.conftest import REFERENCE
from tests.support.catalog import read_catalog

pytestmark = pytest.mark.integration


def reference(version: int) -> dict[str, Any]:
    return json.loads((REFERENCE / f"river-schema-v{version}.catalog.json").read_text())


def migrate(url: str, schema: str = "metadata", **kw: Any) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [f"{m.line}/{m.version}" for m in Migrator(conn, schema).up(**kw)]


@pytest.mark.parametrize("version", [6, 7])
def test_catalog_matches_river(db_url: str, version: int) -> None:
    migrate(db_url, target_main=version, civic=False)
    with psycopg.connect(db_url) as conn:
        assert read_catalog(conn, "metadata") == reference(version)
        rows = conn.execute("SELECT line, version FROM metadata.river_migration ORDER BY version").fetchall()
    assert rows == [("main", v) for v in range(1, version + 1)]


def test_other_schema_name_gives_same_catalog(db_url: str) -> None:
    migrate(db_url, schema="Work Queue", civic=False)
    with psycopg.connect(db_url) as conn:
        assert read_catalog(conn, "Work Queue") == reference(7)


def test_version_8_is_recorded_and_changes_no_object(db_url: str) -> None:
    """River 0.48's 008 (job_id_autoincrement) is a no-op on PostgreSQL: the catalog at 8 is the catalog at
    7, and only the row ('main', 8) tells them apart."""
    assert migrate(db_url, civic=False) == [f"main/{v}" for v in range(1, 9)]
    with psycopg.connect(db_url) as conn:
        assert read_catalog(conn, "metadata") == reference(7)
        rows = conn.execute("SELECT line, version FROM metadata.river_migration ORDER BY version").fetchall()
    assert rows == [("main", v) for v in range(1, 9)]
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert [x.version for x in Migrator(conn, "metadata").down(MAIN, 7)] == [8]
        assert read_catalog(conn, "metadata") == reference(7)
        assert conn.execute("SELECT max(version) FROM metadata.river_migration").fetchone() == (7,)


def test_someone_elses_schema_at_7_stays_at_7_unless_told(db_url: str) -> None:
    """A database River 0.47's migrator made (7, no mark of ours): the default leaves it; --target 8 adds 008."""
    migrate(db_url, target_main=7, civic=False)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("COMMENT ON TABLE metadata.river_migration IS NULL")  # as if River had made it
        m = Migrator(conn, "metadata")
        assert m.up(civic=False) == []
        assert m.decision is not None and "left at 7" in m.decision.reason
        assert [x.version for x in m.up(target_main=8, civic=False)] == [8]
        assert m.current(MAIN) == 8 and not m.ours()


def test_database_at_8_from_rivers_migrator_is_accepted(db_url: str) -> None:
    """River 0.48+ users have main 1..8: migrate leaves River's line alone and adds only our file tables."""
    migrate(db_url, civic=False)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("COMMENT ON TABLE metadata.river_migration IS NULL")
        m = Migrator(conn, "metadata")
        assert [f"{x.line}/{x.version}" for x in m.up()] == ["civic_files/1", "civic_files/2"]
        assert m.decision is not None and "left at 8" in m.decision.reason
        assert m.current(MAIN) == 8
    with pytest.raises(ValueError, match=r"1\.\.8"):
        migrate(db_url, target_main=9)


def test_idempotent_and_incremental(db_url: str) -> None:
    assert migrate(db_url, target_main=6, civic=False) == [f"main/{v}" for v in range(1, 7)]
    assert migrate(db_url, target_main=6, civic=False) == []
    assert migrate(db_url, civic=False) == ["main/7", "main/8"]
    assert migrate(db_url) == ["civic_files/1", "civic_files/2"]
    assert migrate(db_url) == []


def test_down_then_up_again(db_url: str) -> None:
    migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        m = Migrator(conn, "metadata")
        with pytest.raises(RuntimeError, match="civic_files line first"):
            m.down(MAIN, 3)
        assert [x.version for x in m.down(CIVIC, 0)] == [2, 1]
        assert [x.version for x in m.down(MAIN, 0)] == [8, 7, 6, 5, 4, 3, 2, 1]
        assert conn.execute("SELECT to_regclass('metadata.river_job')").fetchone() == (None,)
    assert len(migrate(db_url)) == 10
    with psycopg.connect(db_url) as conn:
        assert read_catalog(conn, "metadata") == reference(7)


def test_detects_database_migrated_by_old_river(db_url: str) -> None:
    """A database River migrated to version 4 (river_migration still without `line`)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA metadata")
        for m in load_line(MAIN)[:4]:
            conn.execute(m.up.replace("__SCHEMA__", '"metadata"'))
        conn.execute("INSERT INTO metadata.river_migration (version) VALUES (1), (2), (3), (4)")
        conn.execute("INSERT INTO metadata.river_job (kind, args, max_attempts) VALUES ('k', '{}', 3)")
        assert Migrator(conn, "metadata").current(MAIN) == 4
    # Not ours: the default changes nothing and says why; an explicit target upgrades.
    with psycopg.connect(db_url, autocommit=True) as conn:
        m = Migrator(conn, "metadata")
        assert m.up(civic=False) == []
        assert m.decision is not None and "left at 4" in m.decision.reason and "--target 6" in m.decision.reason
    assert migrate(db_url, target_main=7, civic=False) == ["main/5", "main/6", "main/7"]
    with psycopg.connect(db_url) as conn:
        assert read_catalog(conn, "metadata") == reference(7)
        assert conn.execute("SELECT count(*) FROM metadata.river_job").fetchone() == (1,)


def test_a_schema_we_created_follows_the_latest_and_keeps_our_mark(db_url: str) -> None:
    assert len(migrate(db_url, target_main=5, civic=False)) == 5  # 005 recreates river_migration
    with psycopg.connect(db_url, autocommit=True) as conn:
        m = Migrator(conn, "metadata")
        assert m.ours() and m.origin() == "civic-runner"
        assert [x.version for x in m.up(civic=False)] == [6, 7, 8]
        assert m.decision is not None and "created by civic-runner" in m.decision.reason
        assert m.ours()


def test_migrate_cli_reports_what_it_detected_and_decided(db_url: str) -> None:
    import subprocess
    import sys

    migrate(db_url, target_main=6, civic=False)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("COMMENT ON TABLE metadata.river_migration IS NULL")  # as if River had made it
    cli = [sys.executable, "-m", "civic_runner.cli", "migrate", "--database-url", db_url, "--river-only"]
    out = json.loads(subprocess.run(cli, capture_output=True, text=True, check=True).stdout)
    assert out["detected"] == {"main": 6, "river_schema_origin": "River's migrator or another tool"}
    assert out["applied"] == [] and out["main"] == 6
    assert "left at 6" in out["decided"] and "--target" in out["decided"]
    out = json.loads(subprocess.run([*cli, "--target", "7"], capture_output=True, text=True, check=True).stdout)
    assert out["applied"] == ["main/007_notification_outbox_sqlite_jsonb_and_sql_cleanup"] and out["main"] == 7


def test_concurrent_migrators_are_serialised(db_url: str) -> None:
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            results.append(migrate(db_url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(len(r) for r in results) == [0, 0, 0, 10]


def test_river_only_leaves_civic_os_tables_alone(db_url: str) -> None:
    """A Civic OS database: River at 6 with Civic OS's own files tables and triggers."""
    migrate(db_url, target_main=6, civic=False)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE metadata.files (id uuid PRIMARY KEY, civic_os_marker text)")
        conn.execute("CREATE TABLE metadata.file_upload_requests (id uuid PRIMARY KEY)")
    assert migrate(db_url, civic=False) == ["main/7", "main/8"]  # a River schema we created
    # Even without --river-only, tables Civic OS owns are detected and left alone.
    assert migrate(db_url) == []
    with psycopg.connect(db_url) as conn:
        cols = [
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema='metadata' AND table_name='files'"
            )
        ]
        assert cols == ["id", "civic_os_marker"]


def test_civic_triggers_enqueue_and_notify(db_url: str) -> None:
    migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as listener, psycopg.connect(db_url, autocommit=True) as conn:
        listener.execute('LISTEN "metadata.river_insert"')
        with conn.transaction():
            conn.execute(
                """INSERT INTO metadata.file_upload_requests (entity_type, entity_id, file_name, file_type)
                   VALUES ('issues', '42', 'photo.JPG', 'image/jpeg')"""
            )
            conn.execute(
                """INSERT INTO metadata.files (entity_type, entity_id, file_name, file_type, file_size, s3_original_key)
                   VALUES ('issues', '42', 'a.pdf', 'application/pdf', 10, 'issues/42/x/original.pdf'),
                          ('issues', '42', 'b.txt', 'text/plain', 10, 'issues/42/y/original.txt')"""
            )
            conn.execute("UPDATE metadata.files SET thumbnail_status = 'not_applicable' WHERE file_name = 'b.txt'")
        notes = {n.payload for n in listener.notifies(timeout=2, stop_after=2)}
        assert {json.loads(p)["queue"] for p in notes} == {"s3_signer", "thumbnails"}
        jobs = conn.execute(
            "SELECT kind, queue, priority, max_attempts, state::text, args FROM metadata.river_job ORDER BY id"
        ).fetchall()
        req_id, file_id = conn.execute(
            "SELECT (SELECT id::text FROM metadata.file_upload_requests), "
            "(SELECT id::text FROM metadata.files WHERE file_name = 'a.pdf')"
        ).fetchone()
    assert jobs[0][:5] == ("s3_presign", "s3_signer", 1, 25, "available")
    assert jobs[0][5] == {
        "request_id": req_id,
        "file_name": "photo.JPG",
        "file_type": "image/jpeg",
        "entity_type": "issues",
        "entity_id": "42",
    }
    # Only the pending file gets a thumbnail job (the text file was also pending at insert: Civic OS's
    # frontend decides the status; the trigger only looks at it).
    assert [j[:2] for j in jobs[1:]] == [("thumbnail_generate", "thumbnails")] * 2
    assert jobs[1][5] == {"file_id": file_id}
    assert file_id[14] == "7", "ids are UUIDv7"
