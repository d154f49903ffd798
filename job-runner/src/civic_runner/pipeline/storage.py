"""S3 through boto3: presigning (local HMAC work) and the thumbnail worker's downloads and uploads.

Two clients: one that talks to S3_ENDPOINT, and one that only signs, for S3_PUBLIC_ENDPOINT (the
host the browser will use; SigV4 signs the Host, so a URL signed for the internal name would be
refused when used with the public one). Both are SigV4 and path-style, always: without an explicit
signature_version botocore still produces SigV2 URLs for most regions, and the frontend reads the
bucket from the URL's first path segment.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

import boto3
import botocore.exceptions
from botocore.config import Config

from civic_runner.pipeline.config import S3Settings
from civic_runner.pipeline.errors import InputError, storage_verdict
from civic_runner.pipeline.plan import size_problem

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("civic_runner.pipeline.storage")


class StorageUnavailable(Exception):
    """Storage could not do it now (unreachable, refused, 5xx): retried by River. str() is for people."""


def client_config(s3: S3Settings) -> Config:
    return Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        connect_timeout=s3.connect_timeout,
        read_timeout=s3.read_timeout,
        retries={"mode": "standard", "max_attempts": s3.max_attempts},
        # botocore >= 1.36 adds CRC checksums to every upload by default; several S3-compatible
        # servers (older MinIO, Ceph) reject them. Only where the API requires one.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


class Storage:
    def __init__(self, s3: S3Settings) -> None:
        self.s3 = s3
        self._lock = threading.Lock()
        self._client: S3Client | None = None
        self._signer: S3Client | None = None

    def _make(self, endpoint: str | None) -> S3Client:
        # A Session per client: boto3's default session is not safe to share between threads.
        session = boto3.session.Session()
        client: S3Client = session.client(
            "s3",
            endpoint_url=endpoint,
            region_name=self.s3.region,
            aws_access_key_id=self.s3.access_key_id,
            aws_secret_access_key=self.s3.secret_access_key,
            config=client_config(self.s3),
        )
        return client

    @property
    def client(self) -> S3Client:
        with self._lock:
            if self._client is None:
                self._client = self._make(self.s3.endpoint)
            return self._client

    @property
    def signer(self) -> S3Client:
        with self._lock:
            if self._signer is None:
                self._signer = self._make(self.s3.public_endpoint or self.s3.endpoint)
            return self._signer

    # -- presigning -------------------------------------------------------------------------------

    def presign(self, operation: str, bucket: str, key: str, *, expires: int, acl: str | None) -> str:
        """A presigned PUT (with the ACL as a *signed header*: the uploader must send x-amz-acl) or GET."""
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if operation == "put_object" and acl:
            params["ACL"] = acl
        url: str = self.signer.generate_presigned_url(operation, Params=params, ExpiresIn=expires)
        return url

    # -- objects ----------------------------------------------------------------------------------

    def _unavailable(self, exc: Exception, bucket: str, key: str, what: str) -> Exception:
        """Turn a boto3 error into InputError (permanent) or StorageUnavailable (retry), said plainly."""
        if isinstance(exc, botocore.exceptions.ClientError):
            err = exc.response.get("Error", {})
            meta = exc.response.get("ResponseMetadata", {})
            verdict = storage_verdict(str(err.get("Code", "")), meta.get("HTTPStatusCode"), bucket, key)
            if verdict.permanent:
                return InputError(verdict.message)
            return StorageUnavailable(f"{what}: {verdict.message}")
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return StorageUnavailable(f"{what}: no S3 credentials (set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY).")
        where = self.s3.endpoint or "AWS S3"
        return StorageUnavailable(f"{what}: could not reach file storage at {where} ({type(exc).__name__}: {exc}).")

    def download(self, bucket: str, key: str, max_bytes: int) -> bytes:
        """The whole object, refusing (from Content-Length, before reading) anything over max_bytes."""
        try:
            resp = self.client.get_object(Bucket=bucket, Key=key)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise self._unavailable(exc, bucket, key, "Downloading the original failed") from exc
        body = resp["Body"]
        try:
            length = int(resp.get("ContentLength", -1))
            problem = size_problem(length, max_bytes) if length >= 0 else None
            if problem:
                raise InputError(problem)
            # Read one byte past the limit: a server that lied about the length is caught too.
            data = body.read(max_bytes + 1)
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise self._unavailable(exc, bucket, key, "Downloading the original failed") from exc
        finally:
            body.close()
        problem = size_problem(len(data), max_bytes)
        if problem:
            raise InputError(problem)
        return data

    def upload(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        params: dict[str, Any] = {"Bucket": bucket, "Key": key, "Body": data, "ContentType": content_type}
        if self.s3.acl:
            params["ACL"] = self.s3.acl
        try:
            self.client.put_object(**params)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            err = self._unavailable(exc, bucket, key, "Uploading a thumbnail failed")
            # A 404 on upload means a missing bucket, not a missing file: never permanent.
            raise (StorageUnavailable(str(err)) if isinstance(err, InputError) else err) from exc
