"""thumbnail_generate against PostgreSQL and SeaweedFS, the worker called as the runner calls it:
statuses and keys written, hostile inputs failed at once with a sentence, transient trouble
recorded as 'will retry', row-level security reported, cancellation honoured."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import psycopg
import pytest
import pyvips
from civic_runner.errors import PermanentError
from civic_runner.executor import STOP_SHUTDOWN, STOP_TIMEOUT
from civic_runner.maintenance import RESCUE_ERROR
from civic_runner.pipeline import Pipeline
from civic_runner.pipeline.errors import UpdateBlocked
from civic_runner.pipeline.keys import original_key, uuid7
from civic_runner.pipeline.storage import StorageUnavailable
from psycopg.types.json import Jsonb

from devenv import corpus
from devenv.pg import free_port
from devenv.s3 import SeaweedS3
from tests.pipeline.conftest import create_file_record, ctx_for, fake_job, file_row, make_config

pytestmark = pytest.mark.integration
BUCKET = "civic-os-files"


def stored_file(
    url: str, s3: SeaweedS3 | None, data: bytes | None, file_type: str, *, bucket: str = BUCKET, ext: str = ".bin"
) -> uuid.UUID:
    """An uploaded original and its files row (as create_file_record makes it)."""
    fid = uuid7()
    key = original_key("issues", "42", fid, f"upload{ext}")
    if data is not None and s3 is not None:
        s3.client().put_object(Bucket=bucket, Key=key, Body=data, ContentType=file_type)
    create_file_record(url, file_id=fid, bucket=bucket, key=key, file_type=file_type, file_size=len(data or b""))
    return fid


def run(p: Pipeline, fid: uuid.UUID, *, attempt: int = 1, max_attempts: int = 25, **extra: str) -> dict[str, object]:
    job = fake_job("thumbnail_generate", {"file_id": str(fid), **extra}, attempt=attempt, max_attempts=max_attempts)
    return p.thumbnail(job, ctx_for(job))


def fetch(s3: SeaweedS3, key: str) -> tuple[pyvips.Image, str, bytes]:
    obj = s3.client().get_object(Bucket=BUCKET, Key=key)
    data = obj["Body"].read()
    return pyvips.Image.new_from_buffer(data, ""), obj["ContentType"], data


def test_image_thumbnails_written_and_recorded(pipeline: Pipeline, civic_url: str, s3_server: SeaweedS3) -> None:
    fid = stored_file(civic_url, s3_server, corpus.jpeg(1600, 1200), "image/jpeg", ext=".jpg")
    before = file_row(civic_url, fid)
    out = run(pipeline, fid)
    row = file_row(civic_url, fid)
    assert row["thumbnail_status"] == "completed" and row["thumbnail_error"] is None
    assert row["updated_at"] > before["updated_at"]
    prefix = f"issues/42/{fid}"
    assert out["keys"] == {"small": f"{prefix}/thumb-small.jpg", "medium": f"{prefix}/thumb-medium.jpg"} | {
        "large": f"{prefix}/thumb-large.jpg"
    }
    for size, box in (("small", 150), ("medium", 400), ("large", 800)):
        key = row[f"s3_thumbnail_{size}_key"]
        assert key == f"{prefix}/thumb-{size}.jpg"
        img, content_type, _ = fetch(s3_server, key)
        assert (img.width, img.height) == (box, box) and content_type == "image/jpeg"


def test_pdf_thumbnails_are_proportional_pngs(pipeline: Pipeline, civic_url: str, s3_server: SeaweedS3) -> None:
    fid = stored_file(civic_url, s3_server, corpus.pdf(2), " Application/PDF ", ext=".pdf")
    run(pipeline, fid)
    row = file_row(civic_url, fid)
    assert row["thumbnail_status"] == "completed"
    for size, dims in (("small", (116, 150)), ("medium", (309, 400)), ("large", (619, 800))):
        img, content_type, _ = fetch(s3_server, row[f"s3_thumbnail_{size}_key"])
        assert row[f"s3_thumbnail_{size}_key"].endswith(f"/thumb-{size}.png") and content_type == "image/png"
        assert abs(img.width - dims[0]) <= 1 and img.height == dims[1]


def test_older_args_are_accepted_and_the_row_wins(pipeline: Pipeline, civic_url: str, s3_server: SeaweedS3) -> None:
    fid = stored_file(civic_url, s3_server, corpus.jpeg(300, 200), "image/jpeg")
    run(pipeline, fid, s3_key="somewhere/else.jpg", file_type="image/jpeg", bucket=BUCKET)
    assert file_row(civic_url, fid)["thumbnail_status"] == "completed"


def _dht_garbled() -> bytes:
    data = bytearray(corpus.jpeg(800, 600))
    at = data.find(b"\xff\xc4") + 5
    data[at : at + 40] = b"\x00\x13\x37\x42" * 10
    return bytes(data)


HOSTILE: dict[str, tuple[Callable[[], bytes | None], str, str]] = {
    # name: (bytes to upload (None: upload nothing), declared type, words in thumbnail_error)
    "zero bytes": (lambda: b"", "image/png", "empty (0 bytes)"),
    "missing object": (lambda: None, "image/jpeg", "not found in storage"),
    "truncated jpeg": (lambda: corpus.truncated(corpus.jpeg(1200, 900)), "image/jpeg", "damaged, truncated"),
    "corrupt jpeg": (_dht_garbled, "image/jpeg", "Huffman"),
    "png bomb": (lambda: corpus.png_bomb(), "image/png", "more than the 100 megapixels"),
    "huge dimensions": (lambda: corpus.jpeg_with_dimensions(65000, 65000), "image/jpeg", "megapixels"),
    "pdf posing as png": (lambda: corpus.pdf(1), "image/png", "content is a PDF document"),
    "html posing as jpeg": (lambda: b"<!DOCTYPE html><html>hi</html>", "image/jpeg", "content is an HTML page"),
    "jpeg posing as pdf": (lambda: corpus.jpeg(64, 64), "application/pdf", "declared as a PDF"),
    "svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml", "SVG drawings"),
    "encrypted pdf": (lambda: corpus.pdf(1, user_password="secret"), "application/pdf", "password-protected"),
    "corrupt pdf": (corpus.corrupt_pdf, "application/x-pdf", "damaged or is not a real PDF"),
    "not an image type": (lambda: b"PK\x03\x04zip", "application/zip", "only for images and PDFs"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_input_fails_at_once_with_a_sentence(
    case: str, pipeline: Pipeline, civic_url: str, s3_server: SeaweedS3
) -> None:
    make, declared, words = HOSTILE[case]
    fid = stored_file(civic_url, s3_server, make(), declared)
    with pytest.raises(PermanentError) as info:
        run(pipeline, fid)
    row = file_row(civic_url, fid)
    assert row["thumbnail_status"] == "failed", row
    assert words in str(row["thumbnail_error"]) and str(info.value) == row["thumbnail_error"]
    assert row["s3_thumbnail_small_key"] is None


def test_too_large_is_refused_before_reading(civic_url: str, s3_server: SeaweedS3) -> None:
    p = Pipeline(make_config(civic_url, s3_server, THUMBNAIL_MAX_BYTES=str(1024 * 1024)))
    try:
        fid = stored_file(civic_url, s3_server, corpus.jpeg(2000, 2000), "image/jpeg")
        with pytest.raises(PermanentError):
            run(p, fid)
        error = str(file_row(civic_url, fid)["thumbnail_error"])
        assert "more than the 1.0 MB allowed" in error and file_row(civic_url, fid)["thumbnail_status"] == "failed"
    finally:
        p.close()


def test_unreachable_storage_is_retried_then_fails_on_the_last_attempt(civic_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    p = Pipeline(
        make_config(
            civic_url,
            None,
            S3_ENDPOINT=dead,
            S3_ACCESS_KEY_ID="k",
            S3_SECRET_ACCESS_KEY="s",
            S3_CONNECT_TIMEOUT="0.5",
            S3_MAX_ATTEMPTS="1",
        )
    )
    try:
        fid = stored_file(civic_url, None, None, "image/png")
        with pytest.raises(StorageUnavailable):
            run(p, fid, attempt=1)
        row = file_row(civic_url, fid)
        assert row["thumbnail_status"] == "pending"
        assert f"could not reach file storage at {dead}" in row["thumbnail_error"]
        assert "Will retry (attempt 1 of 25)" in row["thumbnail_error"]
        with pytest.raises(StorageUnavailable):
            run(p, fid, attempt=25)
        row = file_row(civic_url, fid)
        assert row["thumbnail_status"] == "failed" and "Gave up after 25 attempts" in row["thumbnail_error"]
    finally:
        p.close()


def test_missing_bucket_is_retried_not_failed(pipeline: Pipeline, civic_url: str) -> None:
    fid = stored_file(civic_url, None, None, "image/png", bucket="no-such-bucket")
    with pytest.raises(StorageUnavailable):
        run(pipeline, fid)
    row = file_row(civic_url, fid)
    assert row["thumbnail_status"] == "pending" and "does not exist" in row["thumbnail_error"]


def test_missing_row_is_permanent(pipeline: Pipeline) -> None:
    with pytest.raises(PermanentError, match=r"no metadata\.files row"):
        run(pipeline, uuid7())


def rescued_job(url: str, fid: uuid.UUID, errors: list[str]) -> int:
    """The river_job row of a thumbnail job after attempts that ended with these errors."""
    entries = [Jsonb({"at": "2026-12-01T00:00:00Z", "attempt": i + 1, "error": e}) for i, e in enumerate(errors)]
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            """INSERT INTO metadata.river_job (kind, args, queue, state, attempt, errors, attempted_at)
               VALUES ('thumbnail_generate', %s, 'thumbnails', 'running', %s, %s, now()) RETURNING id""",
            (Jsonb({"file_id": str(fid)}), len(errors) + 1, entries),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_file_whose_worker_died_twice_in_a_row_fails_instead_of_killing_it_again(
    pipeline: Pipeline, civic_url: str, s3_server: SeaweedS3
) -> None:
    """Each attempt's process died (OOM-killed, say): River's rescuer recorded it twice in a row, so the
    third attempt fails the file with the reason rather than decoding the image again."""
    fid = stored_file(civic_url, s3_server, corpus.jpeg(300, 200), "image/jpeg")
    job_id = rescued_job(civic_url, fid, [RESCUE_ERROR, RESCUE_ERROR])
    job = fake_job("thumbnail_generate", {"file_id": str(fid)}, attempt=3, job_id=job_id)
    with pytest.raises(PermanentError) as info:
        pipeline.thumbnail(job, ctx_for(job))
    row = file_row(civic_url, fid)
    assert row["thumbnail_status"] == "failed" and row["thumbnail_error"] == str(info.value)
    assert "died during the last 2 attempts" in row["thumbnail_error"] and "memory limit" in row["thumbnail_error"]
    # Once, or not in a row (an error of its own between): a neighbour's fault, so it is tried again.
    for errors in ([RESCUE_ERROR], [RESCUE_ERROR, "S3 is down.", RESCUE_ERROR]):
        fid = stored_file(civic_url, s3_server, corpus.jpeg(300, 200), "image/jpeg")
        job_id = rescued_job(civic_url, fid, errors)
        job = fake_job("thumbnail_generate", {"file_id": str(fid)}, attempt=len(errors) + 1, job_id=job_id)
        pipeline.thumbnail(job, ctx_for(job))
        assert file_row(civic_url, fid)["thumbnail_status"] == "completed", errors


@pytest.mark.parametrize(("reason", "status"), [(STOP_SHUTDOWN, "pending"), (STOP_TIMEOUT, "pending")])
def test_cancellation_between_steps(
    reason: str, status: str, pipeline: Pipeline, civic_url: str, s3_server: SeaweedS3
) -> None:
    fid = stored_file(civic_url, s3_server, corpus.jpeg(300, 200), "image/jpeg")
    job = fake_job("thumbnail_generate", {"file_id": str(fid)})
    ctx = ctx_for(job)
    ctx.cancel(reason)
    with pytest.raises(InterruptedError):
        pipeline.thumbnail(job, ctx)
    row = file_row(civic_url, fid)
    assert row["thumbnail_status"] == status and "retr" in row["thumbnail_error"]


def test_row_level_security_blocking_the_update_is_reported(civic_url: str, s3_server: SeaweedS3) -> None:
    # Civic OS's UPDATE policy, and a worker role that does not bypass RLS.
    with psycopg.connect(civic_url, autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS civic_worker_rls")
        conn.execute("CREATE ROLE civic_worker_rls LOGIN NOBYPASSRLS")
        conn.execute("GRANT USAGE ON SCHEMA metadata TO civic_worker_rls")
        conn.execute("GRANT SELECT, UPDATE ON metadata.files TO civic_worker_rls")
        conn.execute("ALTER TABLE metadata.files ENABLE ROW LEVEL SECURITY")
        conn.execute('CREATE POLICY "Tiered file visibility" ON metadata.files FOR SELECT USING (true)')
        conn.execute(
            """CREATE POLICY "Users can update own recent uploads" ON metadata.files FOR UPDATE
               USING (created_at > now() - interval '5 minutes')"""
        )
    fid = stored_file(civic_url, s3_server, corpus.jpeg(300, 200), "image/jpeg")
    with psycopg.connect(civic_url, autocommit=True) as conn:
        conn.execute("UPDATE metadata.files SET created_at = now() - interval '1 hour' WHERE id = %s", (fid,))
    role_url = civic_url.replace("postgres@", "civic_worker_rls@")
    p = Pipeline(make_config(role_url, s3_server))
    try:
        with pytest.raises(UpdateBlocked, match="Users can update own recent uploads"):
            run(p, fid)
        assert file_row(civic_url, fid)["thumbnail_status"] == "pending"  # nothing could be written
        with psycopg.connect(civic_url, autocommit=True) as conn:
            conn.execute("ALTER ROLE civic_worker_rls BYPASSRLS")
        p.close()
        p = Pipeline(make_config(role_url, s3_server))
        run(p, fid)
        assert file_row(civic_url, fid)["thumbnail_status"] == "completed"
    finally:
        p.close()
        with psycopg.connect(civic_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY civic_worker_rls")
            conn.execute("DROP ROLE civic_worker_rls")
