"""s3_presign against PostgreSQL and a real S3 server that checks SigV4 (SeaweedFS)."""

from __future__ import annotations

import time
import uuid
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import requests
from civic_runner.errors import PermanentError
from civic_runner.pipeline import Pipeline
from civic_runner.pipeline.keys import bucket_and_key_from_url

from devenv.s3 import SeaweedS3
from tests.pipeline.conftest import ctx_for, fake_job, make_config, request_upload, upload_request

pytestmark = pytest.mark.integration


def presign(p: Pipeline, url: str, request_id: str, **args: str) -> dict[str, object]:
    job_args = {"request_id": request_id, **args}
    if not args:
        with psycopg.connect(url, autocommit=True) as conn:
            found = conn.execute(
                "SELECT args FROM metadata.river_job WHERE kind = 's3_presign' AND args->>'request_id' = %s",
                (request_id,),
            ).fetchone()
        assert found is not None, "the trigger enqueued no job"
        job_args = found[0]
    job = fake_job("s3_presign", job_args)
    return p.presign(job, ctx_for(job))


def put(url: str, data: bytes, content_type: str = "image/png", acl: str | None = "public-read") -> requests.Response:
    headers = {"Content-Type": content_type}
    if acl:
        headers["x-amz-acl"] = acl
    return requests.put(url, data=data, headers=headers, timeout=10)


def test_presigned_put_is_sigv4_path_style_with_signed_acl(
    pipeline: Pipeline, civic_url: str, s3_server: SeaweedS3
) -> None:
    rid = request_upload(civic_url, "Holiday Photo.JPG", "image/jpeg", "issues", "42")
    assert upload_request(civic_url, rid)["status"] == "pending"
    presign(pipeline, civic_url, rid)
    row = upload_request(civic_url, rid)
    assert row["status"] == "completed" and row["error_message"] is None
    file_id = row["file_id"]
    assert isinstance(file_id, uuid.UUID) and file_id.version == 7
    assert row["s3_key"] == f"issues/42/{file_id}/original.jpg"
    url = str(row["presigned_url"])
    parts = urlsplit(url)
    q = parse_qs(parts.query)
    assert f"{parts.scheme}://{parts.netloc}" == s3_server.endpoint
    assert bucket_and_key_from_url(url) == ("civic-os-files", row["s3_key"])  # what the frontend does
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and q["X-Amz-Expires"] == ["900"]
    assert q["X-Amz-SignedHeaders"] == ["host;x-amz-acl"]  # the ACL is a signed header, not a query param
    assert "x-amz-acl" not in q and "Signature" not in q and "AWSAccessKeyId" not in q

    assert put(url, b"\xff\xd8\xff pretend jpeg", "image/jpeg").status_code == 200
    obj = s3_server.client().get_object(Bucket="civic-os-files", Key=row["s3_key"])
    assert obj["Body"].read() == b"\xff\xd8\xff pretend jpeg" and obj["ContentType"] == "image/jpeg"


def test_server_is_strict_about_signatures(pipeline: Pipeline, civic_url: str) -> None:
    rid = request_upload(civic_url, "a.png", "image/png")
    presign(pipeline, civic_url, rid)
    url = str(upload_request(civic_url, rid)["presigned_url"])
    sig = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    tampered = url.replace(sig, ("0" if sig[0] != "0" else "1") + sig[1:])
    assert put(tampered, b"x").status_code == 403
    assert put(url, b"x", acl=None).status_code == 403  # the signed x-amz-acl header is required
    assert put(url, b"x", acl="private").status_code == 403  # ... with the signed value
    assert put(url.replace("/original.png", "/other.png"), b"x").status_code == 403
    assert put(url, b"x").status_code == 200


def test_expired_url_is_refused(civic_url: str, s3_server: SeaweedS3) -> None:
    p = Pipeline(make_config(civic_url, s3_server, S3_PRESIGN_EXPIRY="1"))
    try:
        rid = request_upload(civic_url, "a.png", "image/png")
        presign(p, civic_url, rid)
        url = str(upload_request(civic_url, rid)["presigned_url"])
        assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["1"]
        time.sleep(2.2)
        resp = put(url, b"x")
        assert resp.status_code == 403 and "expired" in resp.text.lower()
    finally:
        p.close()


def test_public_endpoint_signs_for_the_public_host(civic_url: str, s3_server: SeaweedS3) -> None:
    # The same server under another name: URLs name (and sign) "localhost", the worker itself uses 127.0.0.1.
    public = s3_server.endpoint.replace("127.0.0.1", "localhost")
    p = Pipeline(make_config(civic_url, s3_server, S3_PUBLIC_ENDPOINT=public))
    try:
        rid = request_upload(civic_url, "a.pdf", "application/pdf")
        presign(p, civic_url, rid)
        url = str(upload_request(civic_url, rid)["presigned_url"])
        assert url.startswith(public + "/civic-os-files/")
        # Signed for the public host: used against the internal name, the Host header no longer matches.
        assert put(url.replace("localhost", "127.0.0.1"), b"%PDF-1.4").status_code == 403
        assert put(url, b"%PDF-1.4", "application/pdf").status_code == 200
    finally:
        p.close()


def test_older_args_upload_and_download(pipeline: Pipeline, civic_url: str, s3_server: SeaweedS3) -> None:
    rid = request_upload(civic_url, "seed.png", "image/png")
    presign(pipeline, civic_url, rid, bucket="civic-os-files", key="seed/data/file.png", operation="upload")
    row = upload_request(civic_url, rid)
    assert row["status"] == "completed" and row["s3_key"] == "seed/data/file.png" and row["file_id"] is None
    assert put(str(row["presigned_url"]), b"seeded").status_code == 200

    rid2 = request_upload(civic_url, "seed.png", "image/png")
    presign(pipeline, civic_url, rid2, bucket="civic-os-files", key="seed/data/file.png", operation="download")
    got = requests.get(str(upload_request(civic_url, rid2)["presigned_url"]), timeout=10)
    assert got.status_code == 200 and got.content == b"seeded"


def test_bad_request_is_failed_with_a_message_and_discarded(pipeline: Pipeline, civic_url: str) -> None:
    rid = request_upload(civic_url, "a.png", "image/png", "issues", "../../etc")
    with pytest.raises(PermanentError, match="entity_id"):
        presign(pipeline, civic_url, rid)
    row = upload_request(civic_url, rid)
    assert row["status"] == "failed" and row["presigned_url"] is None
    assert "cannot be part of a file's key" in str(row["error_message"])


def test_extension_is_sanitised(pipeline: Pipeline, civic_url: str) -> None:
    for name, ext in (("scan.PDF", ".pdf"), ("evil.php%00.png\x7f", ".png"), ("no extension", ".bin")):
        rid = request_upload(civic_url, name, "application/octet-stream")
        presign(pipeline, civic_url, rid)
        assert str(upload_request(civic_url, rid)["s3_key"]).endswith(f"/original{ext}")


def test_missing_row_is_an_error_not_a_success(pipeline: Pipeline, civic_url: str) -> None:
    with pytest.raises(PermanentError, match="no file_upload_requests row"):
        presign(pipeline, civic_url, str(uuid.uuid4()), file_name="a.png", entity_type="issues", entity_id="1")


def test_a_rerun_keeps_the_first_url(pipeline: Pipeline, civic_url: str) -> None:
    rid = request_upload(civic_url, "a.png", "image/png")
    presign(pipeline, civic_url, rid)
    first = upload_request(civic_url, rid)
    out = presign(pipeline, civic_url, rid)
    assert out == {"already_completed": True} and upload_request(civic_url, rid) == first


def test_other_schema(db_url: str, s3_server: SeaweedS3) -> None:
    from tests.support.harness import migrate

    migrate(db_url, "civic", civic=True)
    p = Pipeline(make_config(db_url, s3_server, RIVER_SCHEMA="civic"))
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            row = conn.execute(
                """INSERT INTO civic.file_upload_requests (entity_type, entity_id, file_name, file_type)
                   VALUES ('issues', '1', 'a.png', 'image/png') RETURNING id"""
            ).fetchone()
            assert row is not None
            job = fake_job(
                "s3_presign",
                {"request_id": str(row[0]), "file_name": "a.png", "entity_type": "issues", "entity_id": "1"},
            )
            p.presign(job, ctx_for(job))
            status = conn.execute("SELECT status FROM civic.file_upload_requests WHERE id = %s", (row[0],)).fetchone()
        assert status == ("completed",)
    finally:
        p.close()
