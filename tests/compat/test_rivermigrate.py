"""River v0.51.2's own migrator (the rivermigrate package, through tests/interop/go) and
`civic-runner migrate` agree in both directions: River finds nothing to do on a database we
migrated to 8, and a database River migrated is accepted, completed and worked by us."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest
from civic_runner.migrate import Migrator

from tests.compat.conftest import GoRiver
from tests.conftest import REFERENCE
from tests.support.catalog import read_catalog
from tests.support.harness import ROOT, InProcessRunner, insert, query, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.compat

ALL = list(range(1, 9))


def civic_migrate(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "civic_runner.cli", "migrate", "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def main_versions(url: str) -> list[int]:
    return [v for (v,) in query(url, "SELECT version FROM metadata.river_migration WHERE line='main' ORDER BY 1")]


def v7_catalog() -> object:
    # River's 008 changes no object on PostgreSQL, so River's catalog at 8 is its catalog at 7.
    return json.loads((REFERENCE / "river-schema-v7.catalog.json").read_text())


def works_a_job(url: str) -> None:
    job_id = insert(url, "echo", {"value": "ok"})[0]
    with InProcessRunner(url, registry):
        wait_for(
            lambda: query(url, "SELECT state::text FROM metadata.river_job WHERE id=%s", (job_id,)) == [("completed",)],
            timeout=15,
            what="job completed",
        )


def test_river_0_51_accepts_civic_runner_migrate_target_8(db_url: str, go: GoRiver) -> None:
    civic_migrate(db_url, "--target", "8")
    assert go("migrate-validate") == {"ok": True, "messages": None}
    assert go("migrate-versions") == {"known": ALL, "existing": ALL}
    assert go("migrate-up", "--dry-run") == {"direction": "up", "versions": []}, "nothing pending for River"
    with psycopg.connect(db_url) as conn:
        assert read_catalog(conn, "metadata") == v7_catalog()


def test_database_river_0_51_migrated_is_accepted_and_worked_by_us(db_url: str, go: GoRiver) -> None:
    query(db_url, "CREATE SCHEMA metadata")
    assert go("migrate-up") == {"direction": "up", "versions": ALL}
    with psycopg.connect(db_url) as conn:
        assert read_catalog(conn, "metadata") == v7_catalog(), "River's objects at 8 are the ones we know"
    report = json.loads(civic_migrate(db_url).stdout)
    assert report["detected"]["main"] == 8 and report["main"] == 8, report
    assert report["applied"] == ["civic_files/001_file_tables", "civic_files/002_enqueue_triggers"], report
    assert main_versions(db_url) == ALL
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert Migrator(conn, "metadata").up() == [], "a second migrate has nothing left to do"
    query(db_url, "CREATE TABLE IF NOT EXISTS test_runs (job_id bigint, attempt int, pid int, at timestamptz)")
    works_a_job(db_url)
    assert go("migrate-validate")["ok"] is True, "our civic_files line does not disturb River's"


def test_river_0_51_finishes_our_7_with_008_only_and_we_work_it(db_url: str, go: GoRiver) -> None:
    civic_migrate(db_url, "--target", "7", "--river-only")
    r = go.run("migrate-validate")
    assert r.returncode == 1 and "Unapplied migrations: [8]" in r.stdout, r.stdout + r.stderr
    assert go("migrate-up") == {"direction": "up", "versions": [8]}
    assert main_versions(db_url) == ALL
    civic_migrate(db_url, "--river-only")  # a River schema at River's latest: nothing to do
    assert main_versions(db_url) == ALL
    query(db_url, "CREATE TABLE IF NOT EXISTS test_runs (job_id bigint, attempt int, pid int, at timestamptz)")
    works_a_job(db_url)


def test_river_0_51_migrates_our_8_down_to_6_object_for_object(db_url: str, go: GoRiver) -> None:
    """River's down migrations find every object ours created at 7 and 8 (same names, same shapes)."""
    civic_migrate(db_url, "--river-only")
    assert go("migrate-down", "--target", "6") == {"direction": "down", "versions": [8, 7]}
    assert main_versions(db_url) == list(range(1, 7))
    with psycopg.connect(db_url) as conn:
        assert read_catalog(conn, "metadata") == json.loads((REFERENCE / "river-schema-v6.catalog.json").read_text())
