"""The pipeline's pure decisions, table by table: settings, keys, MIME, sizing, error verdicts."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from civic_runner.errors import PermanentError
from civic_runner.executor import STOP_REMOTE_CANCEL, STOP_SHUTDOWN, STOP_TIMEOUT
from civic_runner.maintenance import RESCUE_ERROR
from civic_runner.pipeline import config as C
from civic_runner.pipeline import keys as K
from civic_runner.pipeline import mime as M
from civic_runner.pipeline import pdf
from civic_runner.pipeline import plan as P
from civic_runner.pipeline.db import rls_may_block
from civic_runner.pipeline.errors import InputError, storage_verdict
from civic_runner.pipeline.presign import plan as presign_plan
from civic_runner.pipeline.presign import request_id_of
from civic_runner.pipeline.storage import StorageUnavailable
from civic_runner.pipeline.thumbnail import (
    MAX_WORKER_DEATHS,
    parse_args,
    retry_message,
    stop_message,
    transient_message,
    worker_deaths,
)
from civic_runner.pipeline.watchdog import StatementTimeout

pytestmark = pytest.mark.unit

# -- settings ---------------------------------------------------------------------------------------


def test_defaults_are_civic_os_defaults() -> None:
    cfg = C.from_env({})
    assert cfg.s3.bucket == "civic-os-files" and cfg.s3.region == "us-east-1"
    assert cfg.s3.presign_expiry == 900 and cfg.s3.acl == "public-read"
    assert cfg.s3.endpoint is None and cfg.s3.access_key_id is None
    t = cfg.thumbnails
    assert t.sizes == (150, 400, 800) and t.qualities == (80, 85, 90)
    assert t.fit is C.Fit.PAD and t.background == (255, 255, 255) and not t.enlarge
    assert cfg.schema == "metadata" and cfg.db_max_conns == 2 and cfg.warnings == ()
    assert cfg.db_statement_timeout == 10.0
    assert C.from_env({"PIPELINE_DB_STATEMENT_TIMEOUT": "2.5"}).db_statement_timeout == 2.5


def test_runner_names_for_database_and_schema() -> None:
    cfg = C.from_env({"DATABASE_URL": "postgresql://x/y", "CIVIC_SCHEMA": "civic"})
    assert cfg.database_url == "postgresql://x/y" and cfg.schema == "civic"
    assert C.from_env({"RIVER_SCHEMA": "a", "CIVIC_SCHEMA": "b"}).schema == "a"


def test_aws_names_are_fallbacks_with_deprecation_warnings() -> None:
    env = {
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "AWS_REGION": "eu-west-1",
        "AWS_ENDPOINT_URL": "http://minio:9000",
    }
    cfg = C.from_env(env)
    assert (cfg.s3.access_key_id, cfg.s3.secret_access_key, cfg.s3.region) == ("k", "s", "eu-west-1")
    assert cfg.s3.endpoint == "http://minio:9000"
    assert len(cfg.warnings) == 4 and all("deprecated" in w for w in cfg.warnings)
    cfg = C.from_env({**env, "S3_ACCESS_KEY_ID": "k2", "S3_SECRET_ACCESS_KEY": "s2"})
    assert cfg.s3.access_key_id == "k2" and len(cfg.warnings) == 2


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"S3_PRESIGN_EXPIRY": "604801"}, "S3_PRESIGN_EXPIRY"),  # more than SigV4's 7 days
        ({"S3_PRESIGN_EXPIRY": "0"}, "S3_PRESIGN_EXPIRY"),
        ({"S3_PRESIGN_EXPIRY": "15m"}, "S3_PRESIGN_EXPIRY"),
        ({"S3_BUCKET": "Bad_Bucket"}, "S3_BUCKET"),
        ({"S3_ENDPOINT": "minio:9000"}, "S3_ENDPOINT"),
        ({"S3_ENDPOINT": "http://minio:9000/s3"}, "S3_ENDPOINT"),  # path prefix breaks the frontend
        ({"S3_PUBLIC_ENDPOINT": "https://files.example.org/storage"}, "S3_PUBLIC_ENDPOINT"),
        ({"S3_ACCESS_KEY_ID": "only-the-id"}, "S3_SECRET_ACCESS_KEY"),
        ({"S3_ACL": "public"}, "S3_ACL"),
        ({"THUMBNAIL_SIZES": "150,400"}, "THUMBNAIL_SIZES"),
        ({"THUMBNAIL_SIZES": "800,400,150"}, "THUMBNAIL_SIZES"),
        ({"THUMBNAIL_SIZES": "0,400,800"}, "THUMBNAIL_SIZES"),
        ({"THUMBNAIL_QUALITIES": "80,85,101"}, "THUMBNAIL_QUALITIES"),
        ({"THUMBNAIL_FIT": "stretch"}, "THUMBNAIL_FIT"),
        ({"THUMBNAIL_BACKGROUND": "white"}, "THUMBNAIL_BACKGROUND"),
        ({"THUMBNAIL_ENLARGE": "maybe"}, "THUMBNAIL_ENLARGE"),
        ({"THUMBNAIL_MAX_MEGAPIXELS": "-1"}, "THUMBNAIL_MAX_MEGAPIXELS"),
        ({"THUMBNAIL_FAIL_ON": "never"}, "THUMBNAIL_FAIL_ON"),
        ({"PIPELINE_DB_MAX_CONNS": "0"}, "PIPELINE_DB_MAX_CONNS"),
        ({"PIPELINE_DB_STATEMENT_TIMEOUT": "0"}, "PIPELINE_DB_STATEMENT_TIMEOUT"),  # no "wait for ever"
        ({"PIPELINE_DB_STATEMENT_TIMEOUT": "30s"}, "PIPELINE_DB_STATEMENT_TIMEOUT"),
        ({"THUMBNAIL_RENDER_TIMEOUT": "0"}, "THUMBNAIL_RENDER_TIMEOUT"),
        ({"THUMBNAIL_VIPS_THREADS": "0"}, "THUMBNAIL_VIPS_THREADS"),
    ],
)
def test_bad_settings_are_refused_naming_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(C.ConfigError, match=names):
        C.from_env(env)


def test_endpoint_with_path_is_fine_when_a_public_endpoint_signs() -> None:
    cfg = C.from_env({"S3_ENDPOINT": "http://minio:9000/", "S3_PUBLIC_ENDPOINT": "https://files.example.org"})
    assert cfg.s3.endpoint == "http://minio:9000" and cfg.s3.public_endpoint == "https://files.example.org"


def test_settings_parse() -> None:
    cfg = C.from_env(
        {
            "THUMBNAIL_SIZES": " 100, 200 ,300",
            "THUMBNAIL_QUALITIES": "70,75,95",
            "THUMBNAIL_FIT": "CROP",
            "THUMBNAIL_BACKGROUND": "#000",
            "THUMBNAIL_ENLARGE": "yes",
            "THUMBNAIL_MAX_BYTES": "1048576",
            "THUMBNAIL_MAX_MEGAPIXELS": "50",
            "THUMBNAIL_VIPS_THREADS": "4",
            "S3_ACL": "",
            "S3_PRESIGN_EXPIRY": "604800",
        }
    )
    t = cfg.thumbnails
    assert t.sizes == (100, 200, 300) and t.qualities == (70, 75, 95) and t.fit is C.Fit.CROP
    assert t.background == (0, 0, 0) and t.enlarge and t.max_bytes == 1048576 and t.max_pixels == 50_000_000
    assert t.vips_threads == 4 and C.from_env({}).thumbnails.vips_threads == 1
    assert cfg.s3.acl is None and cfg.s3.presign_expiry == 604800


@pytest.mark.parametrize(
    ("raw", "rgb"),
    [("#ffffff", (255, 255, 255)), ("fff", (255, 255, 255)), ("#102030", (16, 32, 48)), ("1, 2,3", (1, 2, 3))],
)
def test_parse_colour(raw: str, rgb: tuple[int, int, int]) -> None:
    assert C.parse_colour(raw) == rgb


# -- keys -------------------------------------------------------------------------------------------


def test_uuid7_layout() -> None:
    u = K.uuid7(ms=0x0123456789AB, rand=bytes(range(10)))
    assert u.version == 7 and u.variant == uuid.RFC_4122
    assert u.hex.startswith("0123456789ab7")
    a, b = K.uuid7(), K.uuid7()
    assert a != b and a.version == 7 and a.hex[:8] <= b.hex[:8]


@pytest.mark.parametrize(
    ("name", "ext"),
    [
        ("photo.JPG", ".jpg"),
        ("report.final.PDF", ".pdf"),
        ("archive.tar.gz", ".gz"),
        ("noext", ".bin"),
        ("trailing.", ".bin"),
        (".bashrc", ".bashrc"),
        ("weird.j p-g", ".jpg"),
        ("x.abcdefghijk", ".bin"),  # 11 characters
        ("x.abcdefghij", ".abcdefghij"),  # 10
        ("x.\uff4a\uff50\uff47", ".bin"),  # fullwidth letters are not [a-z]
        ("x.png\x00.exe", ".exe"),
        ("../../etc/passwd", ".bin"),
        ("dir.v2/file", ".bin"),
        ("C:\\Users\\me\\scan.TIFF", ".tiff"),
        ("x.%2e%2e", ".2e2e"),
        ("", ".bin"),
    ],
)
def test_sanitize_extension(name: str, ext: str) -> None:
    assert K.sanitize_extension(name) == ext


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("issues/42/0190/original.jpg", None),
        ("a", None),
        ("", "empty"),
        ("/issues/42/x", "starts with '/'"),
        ("issues/../secrets", "'..'"),
        ("issues/./x", "'.'"),
        ("issues//x", "empty segment"),
        ("issues/x/", "empty segment"),
        ("issues/\x01x", "control"),
        ("issues/\x7fx", "control"),
        ("issues\\x", "backslash"),
        ("k" * 1025, "1024 bytes"),
        ("é" * 513, "1024 bytes"),  # 1026 bytes in UTF-8
        ("é" * 512, None),
    ],
)
def test_key_problem(key: str, problem: str | None) -> None:
    found = K.key_problem(key)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("issues", True),
        ("42", True),
        ("a.b_c~d-e", True),
        ("a/b", False),
        ("..", False),
        (".", False),
        ("", False),
        ("with space", False),
        ("ünïcode", False),
        ("x" * 255, True),
        ("x" * 256, False),
        ("a:b", False),
    ],
)
def test_segment_problem(value: str, ok: bool) -> None:
    assert (K.segment_problem("entity_id", value) is None) is ok


def test_original_and_thumbnail_keys() -> None:
    fid = uuid.UUID("0190a000-0000-7000-8000-000000000001")
    key = K.original_key("issues", "42", fid, "Photo.JPEG")
    assert key == "issues/42/0190a000-0000-7000-8000-000000000001/original.jpeg"
    assert K.thumbnail_key(key, "small", "jpg") == "issues/42/0190a000-0000-7000-8000-000000000001/thumb-small.jpg"
    assert K.thumbnail_key("loose.png", "large", "png") == "loose.png-thumb-large.png"


@pytest.mark.parametrize(
    ("url", "bucket", "key"),
    [
        (
            "http://127.0.0.1:9000/civic-os-files/issues/42/f/original.jpg?X-Amz-Signature=1",
            "civic-os-files",
            "issues/42/f/original.jpg",
        ),
        ("https://files.example.org/b/a/b%20c.png?x=1", "b", "a/b c.png"),
    ],
)
def test_bucket_and_key_from_url(url: str, bucket: str, key: str) -> None:
    assert K.bucket_and_key_from_url(url) == (bucket, key)


# -- MIME -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("declared", "kind"),
    [
        ("application/pdf", M.Kind.PDF),
        (" Application/PDF ", M.Kind.PDF),
        ("application/x-pdf", M.Kind.PDF),
        ("PDF", M.Kind.PDF),
        ("application/pdf; version=1.7", M.Kind.PDF),
        ("image/jpeg", M.Kind.IMAGE),
        ("IMAGE/PNG", M.Kind.IMAGE),
        ("image/svg+xml", M.Kind.IMAGE),
        ("application/octet-stream", M.Kind.OTHER),
        ("", M.Kind.OTHER),
        ("text/plain", M.Kind.OTHER),
    ],
)
def test_kind_of_type(declared: str, kind: M.Kind) -> None:
    assert M.kind_of_type(declared) is kind


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00", "png"),
        (b"GIF89a\x01\x00", "gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "webp"),
        (b"II*\x00\x08\x00", "tiff"),
        (b"MM\x00*\x00\x00", "tiff"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00", "heif"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00", "avif"),
        (b"\x00\x00\x00\x1cftypisom\x00\x00", "mp4"),
        (b"%PDF-1.7\n", "pdf"),
        (b"garbage first\n%PDF-1.4\n", "pdf"),
        (b"<?xml version='1.0'?><svg xmlns='x'/>", "svg"),
        (b"  <svg width='1'/>", "svg"),
        (b"<!DOCTYPE html><html>", "html"),
        (b"PK\x03\x04\x14\x00", "zip"),
        (b"BM\x36\x00", "bmp"),
        (b"hello world, plain text", "text"),
        (b"\x00\x01\x02\x03\x04", None),
        (b"", None),
    ],
)
def test_sniff(head: bytes, fmt: str | None) -> None:
    assert M.sniff(head) == fmt


@pytest.mark.parametrize(
    ("declared", "data", "kind", "reason"),
    [
        ("image/jpeg", b"\xff\xd8\xff\xe0", M.Kind.IMAGE, None),
        ("image/jpeg", b"\x89PNG\r\n\x1a\n", M.Kind.IMAGE, None),  # renamed files are fine
        ("application/pdf", b"%PDF-1.4", M.Kind.PDF, None),
        ("image/png", b"%PDF-1.4", M.Kind.OTHER, "content is a PDF document"),
        ("image/png", b"<!doctype html>", M.Kind.OTHER, "content is an HTML page"),
        ("image/png", b"\x00\x01\x02", M.Kind.OTHER, "unknown format"),
        ("application/pdf", b"\xff\xd8\xff\xe0", M.Kind.OTHER, "declared as a PDF"),
        ("image/svg+xml", b"<svg/>", M.Kind.OTHER, "SVG drawings are not thumbnailed"),
        ("image/bmp", b"BM\x00\x00", M.Kind.OTHER, "BMP image"),
        ("image/png", b"", M.Kind.OTHER, "empty (0 bytes)"),
        ("application/zip", b"PK\x03\x04", M.Kind.OTHER, "only for images and PDFs"),
    ],
)
def test_choose_renderer(declared: str, data: bytes, kind: M.Kind, reason: str | None) -> None:
    got_kind, _, got_reason = M.choose_renderer(declared, data)
    assert got_kind is kind
    assert (got_reason is None) if reason is None else (got_reason is not None and reason in got_reason)


# -- sizing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("w", "h", "box", "fit", "enlarge", "out"),
    [
        (4000, 3000, 150, C.Fit.PAD, False, (150, 150)),
        (4000, 3000, 800, C.Fit.INSIDE, False, (800, 600)),
        (3000, 4000, 400, C.Fit.INSIDE, False, (300, 400)),
        (100, 80, 150, C.Fit.INSIDE, False, (100, 80)),  # never blown up by default
        (100, 80, 150, C.Fit.INSIDE, True, (150, 120)),
        (100, 80, 150, C.Fit.PAD, False, (150, 150)),  # padded instead
        (4000, 3000, 400, C.Fit.CROP, False, (400, 400)),
        (100, 80, 150, C.Fit.CROP, False, (150, 150)),
        (100_000, 1, 150, C.Fit.INSIDE, False, (150, 1)),  # never zero
    ],
)
def test_expected_size(w: int, h: int, box: int, fit: C.Fit, enlarge: bool, out: tuple[int, int]) -> None:
    assert P.expected_size(w, h, box, fit, enlarge) == out


def test_fit_cover_keeps_small_sides() -> None:
    assert P.fit_cover(100, 300, 150, False) == (100, 150)
    assert P.fit_cover(100, 300, 150, True) == (150, 150)


@pytest.mark.parametrize(
    ("w", "h", "limit", "problem"),
    [
        (8660, 5773, 100_000_000, None),
        (100_000, 100_000, 100_000_000, "10000 megapixels"),
        (10_001, 10_000, 100_000_000, "more than the 100 megapixels"),
        (0, 10, 100, "impossible"),
    ],
)
def test_pixel_problem(w: int, h: int, limit: int, problem: str | None) -> None:
    found = P.pixel_problem(w, h, limit)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize(
    ("size", "limit", "problem"),
    [
        (10, 100, None),
        (100, 100, None),
        (101, 100, "more than the 100 bytes"),
        (0, 100, "empty"),
        (150 * 1024 * 1024, 100 * 1024 * 1024, "150.0 MB, more than the 100.0 MB"),
    ],
)
def test_size_problem(size: int, limit: int, problem: str | None) -> None:
    found = P.size_problem(size, limit)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_targets_largest_first_with_their_qualities() -> None:
    got = P.targets(C.ThumbnailSettings())
    assert [(t.name, t.box, t.quality) for t in got] == [("large", 800, 90), ("medium", 400, 85), ("small", 150, 80)]
    assert P.pdf_render_box(C.ThumbnailSettings(sizes=(100, 200, 640))) == 640


# -- verdicts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "permanent", "words"),
    [
        ("NoSuchKey", 404, True, "not found"),
        ("404", 404, True, "not found"),
        ("NoSuchBucket", 404, False, "does not exist"),
        ("AccessDenied", 403, False, "credentials"),
        ("SignatureDoesNotMatch", 403, False, "credentials"),
        ("InternalError", 500, False, "temporary"),
        ("SlowDown", 503, False, "temporary"),
        ("Weird", 400, False, "returned an error"),
    ],
)
def test_storage_verdict(code: str, status: int, permanent: bool, words: str) -> None:
    v = storage_verdict(code, status, "b", "k")
    assert v.permanent is permanent and words in v.message


@pytest.mark.parametrize(
    ("rc", "stderr", "words"),
    [
        (1, "Command Line Error: Incorrect password\n", "password-protected"),
        (3, "Permission Error: copying not allowed\n", "permissions"),
        (1, "Syntax Error: Couldn't find trailer dictionary\nSyntax Error: Couldn't read xref table\n", "damaged"),
        (-9, "", "more than the 256 MB"),
        (-6, "terminate called after throwing an instance of 'std::bad_alloc'\n", "memory"),
        (99, "Wrong page range given\n", "no pages"),
        (42, "something new\n", "exit code 42: something new"),
    ],
)
def test_pdftoppm_failures_explained(rc: int, stderr: str, words: str) -> None:
    assert words in pdf.explain(rc, stderr, 256)


def test_pdftoppm_command_is_bounded() -> None:
    cmd = pdf.command(800, 512, "/usr/bin/prlimit")
    assert cmd[:3] == ["/usr/bin/prlimit", f"--as={512 * 1024 * 1024}", "--"]
    assert cmd[3:] == ["pdftoppm", "-png", "-f", "1", "-l", "1", "-singlefile", "-scale-to", "800", "-"]
    assert pdf.command(150, 512, None)[0] == "pdftoppm"


def test_rls_may_block() -> None:
    assert rls_may_block(True, False, False, False)
    assert not rls_may_block(True, False, True, False)  # owner
    assert rls_may_block(True, True, True, False)  # owner, but forced
    assert not rls_may_block(True, True, False, True)  # BYPASSRLS
    assert not rls_may_block(False, False, False, False)


# -- job args ---------------------------------------------------------------------------------------

S3 = C.S3Settings()
FID = uuid.UUID("0190a000-0000-7000-8000-000000000001")


def test_presign_plan_current_args() -> None:
    args = {"request_id": str(FID), "file_name": "Scan 1.PDF", "file_type": "application/pdf"}
    p = presign_plan({**args, "entity_type": "issues", "entity_id": "7"}, S3, FID)
    assert p.key == f"issues/7/{FID}/original.pdf" and p.bucket == "civic-os-files"
    assert p.operation == "put_object" and p.file_id == FID


def test_presign_plan_older_args() -> None:
    p = presign_plan(
        {"request_id": "x", "bucket": "civic-os-files", "key": "a/b.png", "operation": "Download"}, S3, FID
    )
    assert (p.bucket, p.key, p.operation, p.file_id) == ("civic-os-files", "a/b.png", "get_object", None)
    p = presign_plan({"key": "a/b.png", "operation": "upload"}, S3, FID)
    assert p.operation == "put_object" and p.bucket == "civic-os-files"


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({"entity_type": "issues", "entity_id": "7"}, "no file_name"),
        ({"entity_type": "issues", "entity_id": "../7", "file_name": "a.png"}, "cannot be part of a file's key"),
        ({"entity_type": "is sues", "entity_id": "7", "file_name": "a.png"}, "entity_type"),
        ({"entity_type": "issues", "entity_id": 7, "file_name": "a.png"}, "no entity_id"),
        ({"key": "../x", "operation": "upload"}, "not allowed"),
        ({"key": "x", "operation": "delete"}, "Unknown presign operation"),
        ({"key": "x", "operation": "upload", "bucket": "someone-elses"}, "not the configured bucket"),
        ({"key": "x", "operation": "upload", "bucket": "NOPE!"}, "not a valid bucket"),
    ],
)
def test_presign_plan_refuses(args: dict[str, object], words: str) -> None:
    with pytest.raises(InputError, match=words):
        presign_plan(args, S3, FID)


@pytest.mark.parametrize("args", [[], "x", {"request_id": "nope"}, {"request_id": None}, {}])
def test_presign_without_request_id_is_permanent(args: object) -> None:
    with pytest.raises(PermanentError):
        request_id_of(args)


def test_thumbnail_args() -> None:
    assert parse_args({"file_id": str(FID)}).file_id == FID
    old = parse_args({"file_id": str(FID), "s3_key": "a/b/c/original.png", "file_type": "image/png"})
    assert old.legacy_key == "a/b/c/original.png" and old.legacy_type == "image/png"
    for bad in ({"file_id": "x"}, {}, ["x"]):
        with pytest.raises(PermanentError):
            parse_args(bad)


def test_retry_messages() -> None:
    assert retry_message("Storage is down.", 1, 25) == ("pending", "Storage is down. Will retry (attempt 1 of 25).")
    assert retry_message("Storage is down.", 25, 25) == ("failed", "Storage is down. Gave up after 25 attempts.")
    assert "could not reach" in transient_message(StorageUnavailable("Downloading failed: could not reach x"))
    assert "Unexpected error (KeyError" in transient_message(KeyError("k"))
    db_down = transient_message(psycopg.OperationalError("connection refused\n\tIs the server running?"))
    assert db_down == "The database could not be reached or failed (OperationalError: connection refused)."
    dead_path = transient_message(StatementTimeout("no answer from the database in 30s: the connection was closed"))
    assert dead_path.startswith("The database could not be reached or failed (StatementTimeout: no answer")
    assert "longer than the job timeout (60 s)" in stop_message(STOP_TIMEOUT, 60.0)
    assert "shut down" in stop_message(STOP_SHUTDOWN, None)
    assert "cancelled" in stop_message(STOP_REMOTE_CANCEL, None)


@pytest.mark.parametrize(
    ("errors", "deaths"),
    [
        ([], 0),
        (["S3 is down."], 0),
        ([RESCUE_ERROR], 1),
        ([RESCUE_ERROR, RESCUE_ERROR], 2),
        (["S3 is down.", RESCUE_ERROR, RESCUE_ERROR], 2),
        ([RESCUE_ERROR, "S3 is down.", RESCUE_ERROR], 1),  # only the attempts in a row, the latest first
        ([RESCUE_ERROR, RESCUE_ERROR, None], 0),
    ],
)
def test_worker_deaths_counts_the_latest_rescues_in_a_row(errors: list[str | None], deaths: int) -> None:
    assert worker_deaths(errors) == deaths
    assert MAX_WORKER_DEATHS == 2  # one death may be a neighbour's image; two in a row are this one's


def test_heic_fallback_decisions() -> None:
    from civic_runner.pipeline import heic

    msg = "heif: Error while loading plugin: Support for this compression format has not been built in: HEVC"
    assert heic.needs_external_decoder(msg)
    assert not heic.needs_external_decoder("VipsJpeg: Premature end of input file")
    # The header decides even when the error text was lost (another thread cleared libvips' buffer).
    assert heic.needs_external_decoder("unable to copy to memory", "heifload_buffer", "hevc")
    assert not heic.needs_external_decoder("unable to copy to memory", "heifload_buffer", "av1")
    assert not heic.needs_external_decoder("unable to copy to memory", "jpegload_buffer", "")
    assert heic.command("a.heic", "b.jpg", 256, None) == ["heif-convert", "--quiet", "-q", "92", "a.heic", "b.jpg"]
    assert heic.command("a", "b", 256, "/usr/bin/prlimit")[:3] == ["/usr/bin/prlimit", f"--as={256 << 20}", "--"]


@pytest.mark.parametrize(
    ("w", "h", "box", "fit", "factor"),
    [
        (4000, 3000, 800, C.Fit.PAD, 4),  # 1000x750, then 800x600
        (8660, 5773, 800, C.Fit.PAD, 8),  # 1083x722
        (8660, 5773, 150, C.Fit.PAD, 8),  # never more than libjpeg's 8
        (1600, 1200, 800, C.Fit.PAD, 2),
        (1599, 1200, 800, C.Fit.PAD, 1),  # 2 would leave 799 px
        (800, 600, 800, C.Fit.PAD, 1),
        (4000, 1000, 800, C.Fit.CROP, 1),  # crop keeps the short side >= 800
        (4000, 3000, 800, C.Fit.CROP, 2),
        (3000, 4000, 800, C.Fit.INSIDE, 4),
    ],
)
def test_jpeg_shrink_on_load(w: int, h: int, box: int, fit: C.Fit, factor: int) -> None:
    assert P.jpeg_shrink(w, h, box, fit) == factor
