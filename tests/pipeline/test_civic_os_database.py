"""civic-runner on a Civic OS v0.70 database (the fixture), as docs/civic-os.md tells an operator to
run it: migrate changes nothing and Civic OS's own verify still passes; the worker role of the docs
(run verbatim) is enough for the whole flow; a role that RLS restricts loses no thumbnail for good;
the docs' requeue statement recovers files the Go worker left pending; other queues are left alone."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from civic_runner.pipeline import Pipeline
from civic_runner.registry import Registry

from devenv import civic_os, corpus
from devenv.s3 import SeaweedS3
from tests.pipeline.conftest import file_row, make_config
from tests.pipeline.frontend import CivicOsV070
from tests.pipeline.test_end_to_end import CLAIMED_FAST, POLL, claim_lags, thumbnails_settled, upload_as_the_frontend
from tests.support.harness import InProcessRunner, query, wait_for

pytestmark = pytest.mark.integration
DOC = Path(__file__).resolve().parents[2] / "docs" / "civic-os.md"


def doc_sql(label: str) -> str:
    """A ```sql <label> block of docs/civic-os.md: the doc and the test cannot drift apart."""
    m = re.search(rf"```sql {re.escape(label)}\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"docs/civic-os.md has no ```sql {label} block"
    return m.group(1)


@pytest.fixture
def civic(db_url: str) -> CivicOsV070:
    return CivicOsV070.install(db_url)


@pytest.fixture
def worker_role(civic: CivicOsV070) -> Iterator[str]:
    """The docs' worker role, run verbatim under a name of its own (roles are server-wide)."""
    role = f"civic_worker_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(civic.url, autocommit=True) as conn:
        conn.execute(doc_sql("worker-role").replace("civic_worker", role))
    yield role
    with psycopg.connect(civic.url, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def river_objects(url: str) -> list[Any]:
    return query(
        url,
        "SELECT c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'metadata' ORDER BY 1",
    )


def test_migrate_defaults_change_nothing_and_civic_os_verify_passes(civic: CivicOsV070) -> None:
    before = river_objects(civic.url)
    out = subprocess.run(
        [sys.executable, "-m", "civic_runner.cli", "migrate", "--database-url", civic.url],
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["applied"] == [] and report["main"] == 6 and report["civic_files"] == 0, report
    assert "Civic OS" in report["detected"]["river_schema_origin"], report
    assert "left at 6" in report["decided"], report
    assert "left alone" in report["file_tables"], report
    assert river_objects(civic.url) == before
    assert query(civic.url, "SELECT to_regclass('metadata.river_client') IS NOT NULL") == [(True,)]
    assert query(civic.url, "SELECT obj_description('metadata.river_migration'::regclass)") == [(None,)]
    civic_os.verify(civic.url)  # Civic OS's own `sqitch verify` of its River change


def test_the_docs_worker_role_runs_the_whole_flow(s3_server: SeaweedS3, civic: CivicOsV070, worker_role: str) -> None:
    worker_url = civic_os.as_user(civic.url, worker_role)
    # migrate (the chart's hook) as that role: a no-op that needs no DDL rights.
    subprocess.run(
        [sys.executable, "-m", "civic_runner.cli", "migrate", "--database-url", worker_url],
        capture_output=True,
        check=True,
    )
    other = civic_os.insert_other_queue_jobs(civic.url)
    p = Pipeline(make_config(worker_url, s3_server))
    try:
        with InProcessRunner(
            worker_url, p.register(Registry()), queues="s3_signer=4,thumbnails=2", fetch_poll_interval=POLL
        ) as r:
            assert r.runner.ready() == (True, "ok")
            file_id, _ = upload_as_the_frontend(civic, "IMG_1.JPG", "image/jpeg", corpus.jpeg(1200, 900))
            row = thumbnails_settled(civic, file_id)
            assert row["thumbnail_status"] == "completed", row["thumbnail_error"]
            lags = claim_lags(civic.url)  # the other queues' jobs are never claimed: these two
            assert len(lags) == 2 and max(lag for _, lag in lags) < CLAIMED_FAST, lags
    finally:
        p.close()
    states = query(civic.url, "SELECT state::text, attempt FROM metadata.river_job WHERE id = ANY(%s)", (other,))
    assert states == [("available", 0)] * len(other), "jobs of Civic OS's other queues must be left to the Go worker"


def test_a_file_hidden_by_rls_is_retried_and_recovers_once_the_role_is_fixed(
    s3_server: SeaweedS3, civic: CivicOsV070, worker_role: str
) -> None:
    with psycopg.connect(civic.url, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {worker_role} NOBYPASSRLS")  # as if BYPASSRLS had been forgotten
    worker_url = civic_os.as_user(civic.url, worker_role)
    p = Pipeline(make_config(worker_url, s3_server))
    try:
        with InProcessRunner(worker_url, p.register(Registry()), queues="s3_signer=2,thumbnails=1") as r:
            file_id, _ = upload_as_the_frontend(civic, "IMG_2.JPG", "image/jpeg", corpus.jpeg(800, 600))
            job = wait_for(
                lambda: query(
                    civic.url,
                    "SELECT id, state::text, attempt, errors FROM metadata.river_job "
                    "WHERE kind = 'thumbnail_generate' AND errors IS NOT NULL",
                ),
                20,
                what="a failed attempt",
            )[0]
            job_id, state, _, errors = job
            assert state in ("retryable", "available", "running"), job  # retried (1 s backoff), not discarded
            message = errors[0]["error"]
            assert "row-level security on metadata.files may be hiding it" in message and worker_role in message
            assert "BYPASSRLS" in message and "will retry" in message
            assert file_row(civic.url, file_id)["thumbnail_status"] == "pending"  # not lost, not failed

            with psycopg.connect(civic.url, autocommit=True) as conn:
                conn.execute(f"ALTER ROLE {worker_role} BYPASSRLS")
                # the new attribute takes effect on new sessions
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (worker_role,)
                )
                conn.execute("UPDATE metadata.river_job SET scheduled_at = now() WHERE id = %s", (job_id,))
            row = thumbnails_settled(civic, file_id)
            assert row["thumbnail_status"] == "completed", row["thumbnail_error"]
            assert r.runner.ready()[0]
    finally:
        p.close()


def test_an_old_file_blocked_by_the_update_policy_is_retried_not_lost(
    s3_server: SeaweedS3, civic: CivicOsV070, worker_role: str
) -> None:
    """The UPDATE policy lets a role without BYPASSRLS touch files younger than 5 minutes only."""
    with psycopg.connect(civic.url, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {worker_role} NOBYPASSRLS")
    civic_os.allow_anonymous_read(civic.url, "issues")  # visible, so only the UPDATE policy is in the way
    worker_url = civic_os.as_user(civic.url, worker_role)
    p = Pipeline(make_config(worker_url, s3_server))
    try:
        with InProcessRunner(worker_url, p.register(Registry()), queues="s3_signer=2", maintenance=False):
            file_id, _ = upload_as_the_frontend(civic, "IMG_3.JPG", "image/jpeg", corpus.jpeg(640, 480))
        # the thumbnails queue was not served: make the file old, as a backlog would be
        with psycopg.connect(civic.url, autocommit=True) as conn:
            conn.execute(
                "UPDATE metadata.files SET created_at = now() - %s WHERE id = %s", (timedelta(minutes=10), file_id)
            )
        with InProcessRunner(worker_url, p.register(Registry()), queues="thumbnails=1"):
            job = wait_for(
                lambda: query(
                    civic.url,
                    "SELECT state::text, errors FROM metadata.river_job "
                    "WHERE kind = 'thumbnail_generate' AND errors IS NOT NULL",
                ),
                20,
                what="a failed attempt",
            )[0]
        assert job[0] in ("retryable", "available", "running"), job  # retried, not discarded
        assert "Users can update own recent uploads" in job[1][0]["error"], job
    finally:
        p.close()


def test_the_docs_requeue_recovers_files_the_go_worker_left_pending(s3_server: SeaweedS3, civic: CivicOsV070) -> None:
    """The Go worker's bug: a failure writes status 'error' (rejected by the CHECK), the row stays
    pending, the job is discarded after 25 attempts. The docs' statement gives such files a new job."""
    data = corpus.jpeg(640, 480)
    s3_server.client().put_object(Bucket="civic-os-files", Key="issues/9/old/original.jpg", Body=data)
    with psycopg.connect(civic.url, autocommit=True) as conn:
        (file_id,) = conn.execute(
            """INSERT INTO metadata.files (entity_type, entity_id, file_name, file_type, file_size, s3_original_key,
                                           created_at)
               VALUES ('issues', '9', 'old.jpg', 'image/jpeg', %s, 'issues/9/old/original.jpg',
                       now() - interval '2 days')
               RETURNING id""",
            (len(data),),
        ).fetchone()
        conn.execute(
            "UPDATE metadata.river_job SET state = 'discarded', attempt = 25, finalized_at = now() "
            "WHERE kind = 'thumbnail_generate'"
        )
        young = conn.execute(  # a fresh upload whose job is still live: not requeued
            """INSERT INTO metadata.files (entity_type, entity_id, file_name, file_type, file_size, s3_original_key)
               VALUES ('issues', '9', 'new.jpg', 'image/jpeg', 1, 'issues/9/new/original.jpg') RETURNING id"""
        ).fetchone()
        assert young is not None
        requeued = conn.execute(doc_sql("requeue-pending-thumbnails")).rowcount
        assert requeued == 1
        assert conn.execute(doc_sql("requeue-pending-thumbnails")).rowcount == 0  # idempotent
    p = Pipeline(make_config(civic.url, s3_server))
    try:
        with InProcessRunner(civic.url, p.register(Registry()), queues="thumbnails=1"):
            row = wait_for(
                lambda: (r := file_row(civic.url, file_id))["thumbnail_status"] in ("completed", "failed") and r,
                20,
                what="requeued thumbnail",
            )
        assert row["thumbnail_status"] == "completed", row["thumbnail_error"]
    finally:
        p.close()


def test_connected_as_authenticator_the_runner_says_why_it_is_not_ready(civic: CivicOsV070, tmp_path: Path) -> None:
    """Civic OS's docs show an `authenticator` URL; that role may not even use schema metadata. The
    runner must stay live, answer /readyz 503 with the reason, and log it (not restart-loop silently)."""
    from devenv.pg import free_port
    from tests.integration.test_startup_readiness import get, logged_errors, readyz_saying
    from tests.support.harness import RunnerProcess

    port = free_port()
    log = tmp_path / "runner.log"
    env = {"CIVIC_HTTP_PORT": str(port), "CIVIC_HTTP_HOST": "127.0.0.1", "CIVIC_KINDS_MODULES": "civic_runner.pipeline"}
    r = RunnerProcess(civic_os.as_user(civic.url, "authenticator"), env=env, log_path=log).start()
    try:
        status, body = readyz_saying(port, 'permission denied for schema "metadata"')
        assert status == 503 and 'GRANT USAGE ON SCHEMA "metadata" TO "authenticator"' in body, body
        assert (get(port, "/healthz") or (0, ""))[0] == 200
    finally:
        assert r.terminate() == 0
    assert any("permission denied for schema" in m for m in logged_errors(log))
