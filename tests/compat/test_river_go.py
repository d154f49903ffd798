"""Interop with River itself: its CLI agrees about the schema, its Go client's jobs are ours to work,
jobs from our triggers are worked by a River Go worker, and a mixed fleet elects one leader."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from civic_runner.migrate import Migrator

from tests.conftest import REFERENCE
from tests.support.catalog import read_catalog
from tests.support.harness import InProcessRunner, RunnerProcess, migrate, query, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.compat


def run(*cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)


def test_river_cli_agrees_database_is_current(db_url: str, river_cli: str) -> None:
    # River 0.47's line ends at 7; its migrator refuses a database holding 8 ("migration 8 not found").
    migrate(db_url, target_main=7)
    r = run(river_cli, "validate", "--database-url", db_url, "--schema", "metadata")
    assert r.returncode == 0, r.stdout + r.stderr
    listing = run(river_cli, "migrate-list", "--database-url", db_url, "--schema", "metadata")
    assert listing.returncode == 0
    assert "* 007" in listing.stdout, listing.stdout


def test_river_cli_sees_target_6_as_one_behind_and_finishes_the_job(db_url: str, river_cli: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        Migrator(conn, "metadata").up(target_main=6, civic=False)
    r = run(river_cli, "validate", "--database-url", db_url, "--schema", "metadata")
    assert r.returncode != 0, "validate must report the pending version 7"
    listing = run(river_cli, "migrate-list", "--database-url", db_url, "--schema", "metadata")
    assert "* 006" in listing.stdout, listing.stdout
    up = run(river_cli, "migrate-up", "--database-url", db_url, "--schema", "metadata")
    assert up.returncode == 0, up.stderr
    with psycopg.connect(db_url) as conn:
        assert read_catalog(conn, "metadata") == json.loads((REFERENCE / "river-schema-v7.catalog.json").read_text())


def test_river_cli_0_47_refuses_our_latest_schema_at_8(db_url: str, river_cli: str) -> None:
    """Why River 0.47 users pin `--target 7`: its CLI does not know 008 (River 0.48+ does)."""
    migrate(db_url)
    listing = run(river_cli, "migrate-list", "--database-url", db_url, "--schema", "metadata")
    assert listing.returncode != 0
    assert "migration 8 not found" in listing.stdout + listing.stderr, listing.stdout + listing.stderr


def test_database_migrated_by_river_cli_is_accepted_by_us(db_url: str, river_cli: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA metadata")
    up = run(river_cli, "migrate-up", "--database-url", db_url, "--schema", "metadata")
    assert up.returncode == 0, up.stderr
    with psycopg.connect(db_url, autocommit=True) as conn:
        applied = Migrator(conn, "metadata").up()
    assert [f"{m.line}/{m.version}" for m in applied] == ["civic_files/1", "civic_files/2"]


def test_jobs_inserted_by_river_go_client_are_completed_by_us(db_url: str, river_interop: str) -> None:
    migrate(db_url)
    r = run(
        river_interop,
        "insert",
        "--database-url",
        db_url,
        "--kind",
        "echo",
        "--count",
        "50",
        "--args",
        '{"value": {"from": "go"}}',
    )
    assert r.returncode == 0, r.stderr
    ids = json.loads(r.stdout)
    assert len(ids) == 50
    with InProcessRunner(db_url, registry):
        wait_for(
            lambda: query(db_url, "SELECT count(*) FROM metadata.river_job WHERE state='completed'")[0][0] == 50,
            timeout=20,
            what="50 completed",
        )
    outputs = query(db_url, "SELECT DISTINCT metadata->'output' FROM metadata.river_job")
    assert outputs == [({"from": "go"},)]


def test_trigger_jobs_are_completed_by_a_river_go_worker(db_url: str, river_interop: str) -> None:
    migrate(db_url, civic=True)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for i in range(5):
            conn.execute(
                "INSERT INTO metadata.file_upload_requests (entity_type, entity_id, file_name, file_type) "
                "VALUES ('issues', %s, 'a.png', 'image/png')",
                (str(i),),
            )
    r = run(
        river_interop,
        "work",
        "--database-url",
        db_url,
        "--queue",
        "s3_signer",
        "--kinds",
        "s3_presign",
        "--timeout",
        "60s",
        timeout=90,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert query(db_url, "SELECT count(*) FROM metadata.interop_worked WHERE kind = 's3_presign'")[0][0] == 5
    assert query(db_url, "SELECT state::text, count(*) FROM metadata.river_job GROUP BY 1") == [("completed", 5)]


def test_mixed_go_python_fleet_elects_exactly_one_leader(db_url: str, river_interop: str, tmp_path: Path) -> None:
    migrate(db_url)
    go = subprocess.Popen(
        [river_interop, "elect", "--database-url", db_url, "--id", "go-a", "--duration", "40s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for(lambda: query(db_url, "SELECT leader_id FROM metadata.river_leader"), timeout=15, what="a leader")
        py = [
            RunnerProcess(
                db_url, "--elect-interval", "0.5", "--client-id", f"py-{i}", log_path=tmp_path / f"py{i}.log"
            ).start()
            for i in range(2)
        ]
        seen = set()
        for _ in range(20):
            rows = query(db_url, "SELECT leader_id FROM metadata.river_leader")
            assert len(rows) == 1
            seen.add(rows[0][0])
            time.sleep(0.25)
        assert seen == {"go-a"}, "the Go leader keeps its term while Python runners bid"
        go.terminate()  # River resigns on stop; a Python runner takes over
        go.wait(20)
        new = wait_for(
            lambda: [r for r in query(db_url, "SELECT leader_id FROM metadata.river_leader") if r[0] != "go-a"],
            timeout=10,
            what="a Python leader",
        )
        assert new[0][0].startswith("py-")
        for p in py:
            assert p.terminate() == 0
    finally:
        if go.poll() is None:
            go.kill()
