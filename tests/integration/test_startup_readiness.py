"""A runner whose database is not usable yet opens its HTTP port at once, stays live, answers
/readyz 503 with the reason, logs the same, and starts working once the cause is fixed, without a
restart (a liveness probe must not restart-loop it, and someone must be able to read why)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import psycopg
import pytest

from devenv.pg import free_port
from tests.support.harness import RunnerProcess, insert, job, migrate, wait_for

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return int(e.code), e.read().decode()
    except OSError:
        return None


def readyz_saying(port: int, text: str) -> tuple[int, str]:
    """/readyz once its body says `text` (the first answer may be "starting: ...")."""

    def check() -> tuple[int, str] | None:
        got = get(port, "/readyz")
        return got if got and text in got[1] else None

    found: tuple[int, str] = wait_for(check, 20, what=f"/readyz saying {text!r}")
    return found


def logged_errors(path: Path) -> list[str]:
    lines = [json.loads(ln) for ln in path.read_text().splitlines() if ln.startswith("{")]
    return [ln["event"] for ln in lines if ln.get("level") == "error"]


def start(url: str, tmp_path: Path) -> tuple[RunnerProcess, int, Path]:
    port = free_port()
    log = tmp_path / "runner.log"
    r = RunnerProcess(url, env={"CIVIC_HTTP_PORT": str(port), "CIVIC_HTTP_HOST": "127.0.0.1"}, log_path=log).start()
    return r, port, log


def test_missing_schema_then_migrated(db_url: str, tmp_path: Path) -> None:
    r, port, log = start(db_url, tmp_path)
    try:
        assert wait_for(lambda: get(port, "/healthz"), 20, what="HTTP up")[0] == 200
        status, body = readyz_saying(port, 'schema "metadata" does not exist')
        assert status == 503, body
        assert any('schema "metadata" does not exist' in m for m in logged_errors(log))
        migrate(db_url)
        assert wait_for(lambda: (get(port, "/readyz") or (0, ""))[0] == 200, 20, what="ready after migrate")
        (job_id,) = insert(db_url, "noop")
        wait_for(lambda: job(db_url, job_id)["state"] == "completed", 10, what="job completed")
    finally:
        assert r.terminate() == 0


def test_role_without_grants_says_which_grant_is_missing(db_url: str, tmp_path: Path) -> None:
    migrate(db_url)
    role = "probe_worker"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"DROP ROLE IF EXISTS {role}")
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA metadata TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA metadata TO {role}")
    as_role = db_url.replace("postgres@", f"{role}@")
    r, port, log = start(as_role, tmp_path)
    try:
        status, body = readyz_saying(port, f'role "{role}" lacks')
        assert status == 503, body
        assert f'role "{role}" lacks' in body and "UPDATE" in body and 'ON "metadata"."river_job"' in body, body
        assert wait_for(lambda: get(port, "/healthz"), 5)[0] == 200  # live: no restart loop
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f"GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA metadata TO {role}")
        assert wait_for(lambda: (get(port, "/readyz") or (0, ""))[0] == 200, 20, what="ready after GRANT")
        (job_id,) = insert(db_url, "noop")
        wait_for(lambda: job(db_url, job_id)["state"] == "completed", 10, what="job completed")
    finally:
        assert r.terminate() == 0
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
    assert any(f'role "{role}" lacks' in m for m in logged_errors(log))
