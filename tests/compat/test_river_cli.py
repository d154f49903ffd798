"""River's CLI v0.47.0 (the newest release of its module the Go module proxy serves) agrees about the
schema: it validates a database we migrated to 7 and we accept one it migrated. River v0.51.2's
migrator is tested in test_rivermigrate.py."""

from __future__ import annotations

import json
import subprocess

import psycopg
import pytest
from civic_runner.migrate import Migrator

from tests.conftest import REFERENCE
from tests.support.catalog import read_catalog
from tests.support.harness import migrate

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
