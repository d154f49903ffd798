"""How the pipeline's failures are told apart, and said to a person.

Two families: the input is bad and always will be (InputError: record `failed`, discard the job at
once) and the world is not ready (anything else: record that we will retry, let River retry).
"""

from __future__ import annotations

from dataclasses import dataclass

RLS_HINT = (
    "the database role may be blocked by Civic OS's row-level security policy "
    '"Users can update own recent uploads" (it only allows updates within 5 minutes of the upload): '
    "the worker's role must bypass RLS (ALTER ROLE ... BYPASSRLS, or connect as the table owner)"
)


class InputError(Exception):
    """Bad input; str(self) is a sentence for thumbnail_error / error_message."""


RLS_READ_HINT = (
    'row-level security on metadata.files may be hiding it from role {role} (policy "Tiered file visibility" '
    "shows a role without a JWT only files anonymous may read): the worker's role must bypass RLS "
    "(ALTER ROLE {role} BYPASSRLS, or connect as the table owner)"
)


class RowHidden(Exception):
    """A files row we cannot see while row-level security applies to us: hidden, or deleted. Retried
    (fixing the role recovers it); str(self) names the cause."""


class UpdateBlocked(Exception):
    """An UPDATE of a row we just read matched nothing: row-level security, or a concurrent delete."""


@dataclass(frozen=True)
class StorageVerdict:
    permanent: bool
    message: str


def storage_verdict(code: str, status: int | None, bucket: str, key: str) -> StorageVerdict:
    """An S3 error code / HTTP status from a GetObject or PutObject, as a verdict and a sentence."""
    where = f"bucket {bucket!r}, key {key!r}"
    if code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket"):
        return StorageVerdict(
            True, f"The original file was not found in storage ({where}): it was never uploaded or has been deleted."
        )
    if code == "NoSuchBucket":
        return StorageVerdict(
            False, f"The storage bucket {bucket!r} does not exist: check S3_BUCKET and the files row."
        )
    if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403") or status == 403:
        return StorageVerdict(
            False, f"Storage refused access ({code}, {where}): check the worker's S3 credentials and bucket policy."
        )
    if (status is not None and status >= 500) or code in ("SlowDown", "InternalError", "ServiceUnavailable"):
        return StorageVerdict(False, f"Storage had a temporary problem ({code or status}).")
    return StorageVerdict(False, f"Storage returned an error ({code or status}, {where}).")


def human_size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
