"""Fixtures of the file pipeline's tests: one SeaweedFS per session, a migrated database per test
(River + Civic OS's file tables and triggers), a Pipeline wired to both, and helpers that do what
Civic OS's RPCs and frontend do."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from civic_runner.job import Job, JobContext, pg_micros
from civic_runner.pipeline import Pipeline
from civic_runner.pipeline.config import PipelineConfig, from_env

from devenv.s3 import SeaweedS3
from tests.support.harness import migrate

SCHEMA = "metadata"


@pytest.fixture(scope="session")
def s3_server(request: pytest.FixtureRequest) -> Iterator[SeaweedS3]:
    server = SeaweedS3(buckets=("civic-os-files", "other-bucket")).launch()
    try:
        request.getfixturevalue("pg_server")  # PostgreSQL starts while SeaweedFS boots
        server.wait_ready()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def civic_url(db_url: str) -> str:
    migrate(db_url, SCHEMA, civic=True)
    return db_url


def make_config(url: str, s3: SeaweedS3 | None, **env: str) -> PipelineConfig:
    values = {"DATABASE_URL": url, "RIVER_SCHEMA": SCHEMA, **(s3.env if s3 else {}), **env}
    return from_env(values)


@pytest.fixture
def pipeline(s3_server: SeaweedS3, civic_url: str) -> Iterator[Pipeline]:
    p = Pipeline(make_config(civic_url, s3_server))
    yield p
    p.close()


def fake_job(kind: str, args: Any, *, attempt: int = 1, max_attempts: int = 25, job_id: int = 1) -> Job:
    """A claimed job as the runner hands it to a worker (for calling workers directly)."""
    import json

    now = datetime.now(UTC)
    return Job(
        id=job_id,
        kind=kind,
        queue="thumbnails" if kind == "thumbnail_generate" else "s3_signer",
        args_json=json.dumps(args),
        attempt=attempt,
        max_attempts=max_attempts,
        priority=1,
        metadata_json="{}",
        error_count=attempt - 1,
        attempted_us=pg_micros(now),
        scheduled_us=pg_micros(now),
        created_us=pg_micros(now),
    )


def ctx_for(job: Job, timeout: float | None = 60.0) -> JobContext:
    return JobContext(job, timeout)


def request_upload(url: str, file_name: str, file_type: str, entity_type: str = "issues", entity_id: str = "42") -> str:
    """Civic OS's request_upload_url(): one row; the trigger enqueues s3_presign."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            f"""INSERT INTO {SCHEMA}.file_upload_requests (entity_type, entity_id, file_name, file_type)
                VALUES (%s, %s, %s, %s) RETURNING id""",
            (entity_type, entity_id, file_name, file_type),
        ).fetchone()
    assert row is not None
    return str(row[0])


def upload_request(url: str, request_id: str) -> dict[str, Any]:
    """Civic OS's get_upload_url() (plus the key)."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            f"""SELECT status, presigned_url, file_id, error_message, s3_key
                FROM {SCHEMA}.file_upload_requests WHERE id = %s""",
            (request_id,),
        )
        row = cur.fetchone()
        assert row is not None
        return dict(zip([d.name for d in cur.description or []], row, strict=True))


def create_file_record(
    url: str,
    *,
    file_id: str | uuid.UUID,
    bucket: str,
    key: str,
    file_type: str,
    file_size: int,
    entity_type: str = "issues",
    entity_id: str = "42",
    file_name: str = "upload",
    thumbnail_status: str = "pending",
) -> None:
    """Civic OS's create_file_record(): the insert fires the thumbnail trigger when pending."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"""INSERT INTO {SCHEMA}.files (id, entity_type, entity_id, file_name, file_type, file_size,
                                          s3_bucket, s3_original_key, thumbnail_status)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            (file_id, entity_type, entity_id, file_name, file_type, file_size, bucket, key, thumbnail_status),
        )


def file_row(url: str, file_id: str | uuid.UUID) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            f"""SELECT thumbnail_status, thumbnail_error, s3_thumbnail_small_key, s3_thumbnail_medium_key,
                       s3_thumbnail_large_key, updated_at, created_at
                FROM {SCHEMA}.files WHERE id = %s""",
            (file_id,),
        )
        row = cur.fetchone()
        assert row is not None
        return dict(zip([d.name for d in cur.description or []], row, strict=True))
