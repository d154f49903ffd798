"""The upload flow exactly as Civic OS's frontend drives it (file-upload.service.ts), through a real
runner, PostgreSQL and an S3 server that checks signatures:

request_upload_url -> poll get_upload_url (10 s budget) -> PUT with Content-Type and x-amz-acl ->
create_file_record (bucket = first path segment of the URL, key = the rest) -> thumbnails appear.

Each test runs on the project's own schema and on the Civic OS v0.70 fixture (its RPCs through a
PostgREST-like session, its triggers that send no NOTIFY, its row-level security).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pyvips
import requests
from civic_runner.pipeline import Pipeline
from civic_runner.pipeline.keys import bucket_and_key_from_url
from civic_runner.registry import Registry

from devenv import corpus
from devenv.s3 import SeaweedS3
from tests.pipeline.conftest import file_row, make_config
from tests.pipeline.frontend import SCHEMAS, Frontend, make_frontend
from tests.support.harness import InProcessRunner, RunnerProcess, query, wait_for

pytestmark = pytest.mark.integration
FRONTEND_BUDGET = 10.0  # 20 polls x 500 ms, then the frontend gives up


@pytest.fixture(params=SCHEMAS)
def frontend(request: pytest.FixtureRequest, db_url: str) -> Frontend:
    return make_frontend(str(request.param), db_url)


@pytest.fixture
def runner(s3_server: SeaweedS3, frontend: Frontend) -> Iterator[tuple[Frontend, SeaweedS3]]:
    p = Pipeline(make_config(frontend.url, s3_server))
    registry = p.register(Registry())
    try:
        with InProcessRunner(frontend.url, registry, queues="s3_signer=4,thumbnails=2", fetch_poll_interval=POLL):
            yield frontend, s3_server
    finally:
        p.close()


def upload_as_the_frontend(fe: Frontend, file_name: str, file_type: str, data: bytes) -> tuple[str, float]:
    started = time.monotonic()
    rid = fe.request_upload_url("7", file_name, file_type)
    while True:  # the frontend polls every 500 ms; we poll faster to measure the latency
        row = fe.get_upload_url(rid)
        if row["status"] in ("completed", "failed"):
            break
        assert time.monotonic() - started < FRONTEND_BUDGET, "the frontend would have given up"
        time.sleep(0.01)
    latency = time.monotonic() - started
    assert row["status"] == "completed", row["error"]
    resp = requests.put(
        str(row["url"]),
        data=data,
        headers={"Content-Type": file_type, "x-amz-acl": "public-read"},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    bucket, key = bucket_and_key_from_url(str(row["url"]))
    assert key.startswith(f"issues/7/{row['file_id']}/original"), key
    is_thumbnailable = file_type.startswith("image/") or file_type == "application/pdf"
    fe.create_file_record(
        file_id=str(row["file_id"]),
        entity_id="7",
        bucket=bucket,
        key=key,
        file_type=file_type,
        size=len(data),
        file_name=file_name,
        thumbnail_status="pending" if is_thumbnailable else "not_applicable",
    )
    return str(row["file_id"]), latency


def claim_lags(url: str) -> list[tuple[str, float]]:
    """(kind, seconds from the job's insert to its last claim) on PostgreSQL's clock."""
    rows = query(
        url,
        "SELECT kind, extract(epoch FROM attempted_at - created_at) FROM metadata.river_job "
        "WHERE attempted_at IS NOT NULL ORDER BY id",
    )
    return [(str(r[0]), float(r[1])) for r in rows]


# The runners of these tests poll every POLL seconds, so a claim within CLAIMED_FAST can only come from a
# wake-up: our trigger's NOTIFY, or the insert watcher's for Civic OS's silent triggers. (Milliseconds in
# practice; the margin is for a loaded machine, where the test client's own RPC transaction, whose start is
# the job's created_at, can take a few hundred ms to commit.)
POLL = 30.0
CLAIMED_FAST = 3.0


def thumbnails_settled(fe: Frontend, file_id: str) -> dict[str, Any]:
    """The frontend's poll of /files (as the user, through RLS), then the whole row (as superuser)."""
    wait_for(
        lambda: fe.thumbnail_status(file_id) in ("completed", "failed"),
        timeout=30,  # the frontend's thumbnail polling budget
        interval=0.05,
        what="thumbnail status",
    )
    return file_row(fe.url, file_id)


def sizes_in_s3(s3: SeaweedS3, row: dict[str, Any]) -> list[tuple[int, int]]:
    out = []
    for size in ("small", "medium", "large"):
        data = s3.client().get_object(Bucket="civic-os-files", Key=row[f"s3_thumbnail_{size}_key"])["Body"].read()
        img = pyvips.Image.new_from_buffer(data, "")
        out.append((img.width, img.height))
    return out


def test_image_and_pdf_uploads_end_to_end(runner: tuple[Frontend, SeaweedS3]) -> None:
    fe, s3 = runner
    url = fe.url
    photo_id, _ = upload_as_the_frontend(fe, "IMG_0001.JPG", "image/jpeg", corpus.jpeg(4000, 3000))
    pdf_id, _ = upload_as_the_frontend(fe, "minutes.pdf", "application/pdf", corpus.pdf(4))

    photo = thumbnails_settled(fe, photo_id)
    assert photo["thumbnail_status"] == "completed", photo["thumbnail_error"]
    assert photo["s3_thumbnail_small_key"] == f"issues/7/{photo_id}/thumb-small.jpg"
    assert sizes_in_s3(s3, photo) == [(150, 150), (400, 400), (800, 800)]

    doc = thumbnails_settled(fe, pdf_id)
    assert doc["thumbnail_status"] == "completed", doc["thumbnail_error"]
    assert doc["s3_thumbnail_large_key"] == f"issues/7/{pdf_id}/thumb-large.png"
    got = sizes_in_s3(s3, doc)
    assert [h for _, h in got] == [150, 400, 800]
    assert all(abs(w - e) <= 1 for (w, _), e in zip(got, (116, 309, 619), strict=True)), got

    with psycopg.connect(url, autocommit=True) as conn:
        states = conn.execute(
            "SELECT kind, state::text, count(*) FROM metadata.river_job GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    assert states == [("s3_presign", "completed", 2), ("thumbnail_generate", "completed", 2)]
    lags = claim_lags(url)
    assert len(lags) == 4 and max(lag for _, lag in lags) < CLAIMED_FAST, lags


def test_hostile_upload_fails_once_and_is_discarded(runner: tuple[Frontend, SeaweedS3]) -> None:
    fe, _ = runner
    url = fe.url
    bad_id, _ = upload_as_the_frontend(fe, "broken.png", "image/png", corpus.truncated(corpus.screenshot_png(800, 600)))
    zip_id, _ = upload_as_the_frontend(fe, "data.zip", "application/zip", b"PK\x03\x04 not thumbnailed")
    bad = thumbnails_settled(fe, bad_id)
    assert bad["thumbnail_status"] == "failed" and "damaged, truncated" in bad["thumbnail_error"]
    assert file_row(url, zip_id)["thumbnail_status"] == "not_applicable"
    with psycopg.connect(url, autocommit=True) as conn:
        job = wait_for(
            lambda: conn.execute(
                """SELECT state::text, attempt, errors FROM metadata.river_job
                   WHERE kind = 'thumbnail_generate' AND state = 'discarded'"""
            ).fetchone(),
            what="discarded job",
        )
        count = conn.execute("SELECT count(*) FROM metadata.river_job WHERE kind = 'thumbnail_generate'").fetchone()
    state, attempt, errors = job
    assert state == "discarded" and attempt == 1 and "damaged, truncated" in errors[0]["error"]
    assert count == (1,)  # the zip's not_applicable row enqueued nothing


def test_civic_runner_run_with_the_pipeline_module(s3_server: SeaweedS3, frontend: Frontend, tmp_path: Path) -> None:
    """`CIVIC_KINDS_MODULES=civic_runner.pipeline civic-runner run`: settings from the environment."""
    env = {**s3_server.env, "CIVIC_KINDS_MODULES": "civic_runner.pipeline", "CIVIC_QUEUES": "s3_signer=2,thumbnails=1"}
    proc = RunnerProcess(frontend.url, env=env, log_path=tmp_path / "runner.log").start()
    try:
        file_id, _ = upload_as_the_frontend(frontend, "a.png", "image/png", corpus.screenshot_png(640, 480))
        row = thumbnails_settled(frontend, file_id)
        assert row["thumbnail_status"] == "completed", row["thumbnail_error"]
        assert proc.terminate(30) == 0
    finally:
        if proc.proc and proc.proc.poll() is None:
            proc.kill()
    log = (tmp_path / "runner.log").read_text()
    assert '"event": "presigned"' in log and '"event": "thumbnails made"' in log, log[-3000:]
