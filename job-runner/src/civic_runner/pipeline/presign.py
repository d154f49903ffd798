"""`s3_presign` (queue s3_signer): a presigned upload URL for a file_upload_requests row.

Current Civic OS args: {request_id, file_name, file_type, entity_type, entity_id} -> a new file id
(UUIDv7) and the key {entity_type}/{entity_id}/{file_id}/original{ext}. Older args:
{request_id, bucket, key, operation: upload|download} -> a URL for that key.

Unlike Civic OS's Go worker, bad input ends the request as `failed` with `error_message` (the
frontend shows it at once instead of polling for 10 s) and the job is discarded, not retried 25 times.
No `processing` write: the whole job is one UPDATE, and the frontend's budget is 10 s.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from civic_runner.errors import PermanentError
from civic_runner.job import Job, JobContext
from civic_runner.pipeline.config import BUCKET_RE, S3Settings
from civic_runner.pipeline.db import Database
from civic_runner.pipeline.errors import InputError
from civic_runner.pipeline.keys import key_problem, original_key, segment_problem, uuid7
from civic_runner.pipeline.storage import Storage

log = logging.getLogger("civic_runner.pipeline.presign")

OPERATIONS = {"upload": "put_object", "download": "get_object"}


@dataclass(frozen=True)
class PresignPlan:
    bucket: str
    key: str
    operation: str  # boto3 operation: put_object | get_object
    file_id: uuid.UUID | None  # None for the older args (the caller owns the key)


def request_id_of(args: Any) -> uuid.UUID:
    """Without a valid request id there is no row to report to: that alone is a bare PermanentError."""
    if not isinstance(args, dict):
        raise PermanentError(f"s3_presign args must be a JSON object, got {type(args).__name__}")
    raw = args.get("request_id")
    try:
        return uuid.UUID(str(raw))
    except (ValueError, TypeError):
        raise PermanentError(f"s3_presign: request_id is not a UUID: {str(raw)[:100]!r}") from None


def _text(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"The upload request has no {name}.")
    return value


def plan(args: dict[str, Any], s3: S3Settings, new_file_id: uuid.UUID) -> PresignPlan:
    """What to sign, from either shape of args; InputError (a sentence for error_message) if bad."""
    if "operation" in args or "key" in args:
        operation = str(args.get("operation", "")).strip().lower()
        if operation not in OPERATIONS:
            raise InputError(f"Unknown presign operation {operation!r}: expected upload or download.")
        bucket = str(args.get("bucket") or s3.bucket)
        if not BUCKET_RE.match(bucket):
            raise InputError(f"{bucket[:80]!r} is not a valid bucket name.")
        if bucket != s3.bucket:
            # Signing for any bucket a database row names would lend our credentials to whoever can insert jobs.
            raise InputError(f"Bucket {bucket!r} is not the configured bucket ({s3.bucket!r}).")
        key = _text(args, "key")
        problem = key_problem(key)
        if problem:
            raise InputError(f"The requested key is not allowed: {problem}.")
        return PresignPlan(bucket, key, OPERATIONS[operation], None)
    entity_type = _text(args, "entity_type")
    entity_id = _text(args, "entity_id")
    file_name = _text(args, "file_name")
    for name, value in (("entity_type", entity_type), ("entity_id", entity_id)):
        problem = segment_problem(name, value)
        if problem:
            raise InputError(f"The upload request's {problem}.")
    key = original_key(entity_type, entity_id, new_file_id, file_name)
    problem = key_problem(key)
    if problem:
        raise InputError(f"The file's key would not be allowed: {problem}.")
    return PresignPlan(s3.bucket, key, "put_object", new_file_id)


def run(db: Database, storage: Storage, job: Job, ctx: JobContext) -> dict[str, Any]:
    started = time.perf_counter()
    args = job.args
    request_id = request_id_of(args)
    try:
        p = plan(args, storage.s3, uuid7())
    except InputError as exc:
        message = str(exc)
        if db.fail_request(request_id, message) == 0:
            raise PermanentError(f"{message} (and no file_upload_requests row {request_id} to record it in)") from exc
        log.info("upload request refused", extra={"request_id": str(request_id), "error": message})
        raise PermanentError(message) from exc
    ctx.raise_if_cancelled()
    url = storage.presign(p.operation, p.bucket, p.key, expires=storage.s3.presign_expiry, acl=storage.s3.acl)
    if db.complete_request(request_id, url, p.key, p.file_id) == 0:
        status = db.request_status(request_id)
        if status is None:
            raise PermanentError(f"no file_upload_requests row {request_id}: deleted, or never committed")
        # Already completed by an earlier run of this job (its completion was lost): keep that URL.
        log.info("upload request already completed", extra={"request_id": str(request_id), "job_id": job.id})
        return {"already_completed": True}
    log.info(
        "presigned",
        extra={
            "request_id": str(request_id),
            "job_id": job.id,
            "s3_key": p.key,
            "operation": p.operation,
            "duration_ms": round((time.perf_counter() - started) * 1000, 2),
        },
    )
    return {"file_id": str(p.file_id) if p.file_id else None, "s3_key": p.key}
