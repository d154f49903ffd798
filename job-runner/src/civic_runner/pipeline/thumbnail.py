"""`thumbnail_generate` (queue thumbnails): three thumbnails of a metadata.files row's original.

Args: {file_id} (Civic OS since v0-10-8: bucket, key and type are read from the row) or the older
{file_id, s3_key, file_type[, bucket]} (the row still wins: it is what the UI shows).

Statuses, which Civic OS's Go worker never writes correctly:
- `processing` when we start; `completed` with the three keys when done;
- `failed` + thumbnail_error at once when the input can never work (the job is discarded);
- `pending` + thumbnail_error "... will retry" when the world was not ready (storage or database
  unreachable, interrupted): River retries with backoff; on the last attempt it becomes `failed`;
- `failed` at the start of an attempt when the worker's process died during the attempts before
  (MAX_WORKER_DEATHS in a row: each found stuck by River's rescuer), typically an OOM kill by an image
  that needs more memory to decode than the pod may use: without it the file would stay `processing`
  while every retry kills the pod again, 25 times.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import PoolTimeout

from civic_runner.errors import PermanentError
from civic_runner.executor import STOP_REMOTE_CANCEL, STOP_SHUTDOWN, STOP_TIMEOUT
from civic_runner.job import Job, JobContext
from civic_runner.maintenance import RESCUE_ERROR
from civic_runner.pipeline import imaging, pdf
from civic_runner.pipeline.config import ThumbnailSettings
from civic_runner.pipeline.db import Database, FileRow
from civic_runner.pipeline.errors import RLS_HINT, RLS_READ_HINT, InputError, RowHidden, UpdateBlocked
from civic_runner.pipeline.keys import thumbnail_key
from civic_runner.pipeline.mime import Kind, choose_renderer, kind_of_type
from civic_runner.pipeline.plan import pdf_render_box
from civic_runner.pipeline.storage import Storage, StorageUnavailable

log = logging.getLogger("civic_runner.pipeline.thumbnail")

# Attempts in a row whose worker process died (rescued by River's rescuer, not failed by us) before
# the next one fails the file instead of trying again: once may be a neighbour's fault (another
# job's image OOM-killing the pod, a node lost); twice in a row is this file.
MAX_WORKER_DEATHS = 2


@dataclass(frozen=True)
class ThumbnailArgs:
    file_id: uuid.UUID
    legacy_key: str | None = None
    legacy_type: str | None = None


def parse_args(args: Any) -> ThumbnailArgs:
    if not isinstance(args, dict):
        raise PermanentError(f"thumbnail_generate args must be a JSON object, got {type(args).__name__}")
    raw = args.get("file_id")
    try:
        file_id = uuid.UUID(str(raw))
    except (ValueError, TypeError):
        raise PermanentError(f"thumbnail_generate: file_id is not a UUID: {str(raw)[:100]!r}") from None
    key = args.get("s3_key")
    file_type = args.get("file_type")
    return ThumbnailArgs(
        file_id, key if isinstance(key, str) else None, file_type if isinstance(file_type, str) else None
    )


def retry_message(message: str, attempt: int, max_attempts: int) -> tuple[str, str]:
    """(status, thumbnail_error) for a failure that may go away: pending until the last attempt."""
    if attempt >= max_attempts:
        return "failed", f"{message} Gave up after {attempt} attempts."
    return "pending", f"{message} Will retry (attempt {attempt} of {max_attempts})."


def transient_message(exc: Exception) -> str:
    if isinstance(exc, StorageUnavailable):
        return str(exc)
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    if isinstance(exc, (psycopg.Error, PoolTimeout)):
        return f"The database could not be reached or failed ({type(exc).__name__}: {first})."
    return f"Unexpected error ({type(exc).__name__}: {first})."


def worker_deaths(errors: Sequence[str | None]) -> int:
    """How many of the last attempts, in a row, ended with the worker's process gone: River's rescuer
    recorded them (a process that lives records its own errors)."""
    n = 0
    for error in reversed(errors):
        if error != RESCUE_ERROR:
            break
        n += 1
    return n


def deaths_message(deaths: int) -> str:
    return (
        f"The worker's process died during the last {deaths} attempts at these thumbnails, most likely killed "
        "for exceeding its memory limit: the image needs more memory to decode than the worker may use. "
        "Not retried: a higher memory limit or fewer thumbnails at a time per pod would let it through."
    )


def stop_message(reason: str, timeout: float | None) -> str:
    if reason == STOP_TIMEOUT:
        return f"Making the thumbnails took longer than the job timeout ({timeout:g} s)."
    if reason == STOP_SHUTDOWN:
        return "The worker was shut down while making the thumbnails."
    if reason == STOP_REMOTE_CANCEL:
        return "The thumbnail job was cancelled."
    return f"The thumbnail job was interrupted ({reason or 'no reason given'})."


def render(file_type: str, data: bytes, settings: ThumbnailSettings) -> tuple[str | None, list[imaging.Rendered]]:
    """The bytes of an original -> its encoded thumbnails (the part the benchmark measures)."""
    kind, fmt, reason = choose_renderer(file_type, data)
    if reason:
        raise InputError(reason)
    if kind is Kind.PDF:
        page = pdf.render_first_page(
            data, pdf_render_box(settings), settings.render_timeout, settings.render_max_memory_mb
        )
        return fmt, imaging.render_pdf_page(page, settings)
    return fmt, imaging.render_image(data, settings)


class ThumbnailWorker:
    def __init__(self, db: Database, storage: Storage, settings: ThumbnailSettings) -> None:
        self.db = db
        self.storage = storage
        self.settings = settings

    def __call__(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        args = parse_args(job.args)
        fid = str(args.file_id)
        try:
            return self._run(job, ctx, args)
        except InputError as exc:
            message = str(exc)
            self.db.thumbnail_error(args.file_id, "failed", message)
            log.info("thumbnail failed", extra={"file_id": fid, "job_id": job.id, "error": message})
            raise PermanentError(message) from exc
        except (PermanentError, UpdateBlocked):
            raise
        except RowHidden as exc:
            # Nothing to record on a row we cannot see: the job's error entry carries the reason.
            log.warning(
                "thumbnail attempt failed",
                extra={"file_id": fid, "job_id": job.id, "attempt": job.attempt, "error": str(exc)},
            )
            raise
        except InterruptedError:
            reason = ctx.cancel_reason
            if reason == STOP_REMOTE_CANCEL:
                status, message = "failed", stop_message(reason, ctx.timeout)
            elif reason == STOP_SHUTDOWN:
                # The runner hands the job back without spending an attempt.
                status, message = "pending", stop_message(reason, ctx.timeout) + " It will be retried."
            else:
                status, message = retry_message(stop_message(reason, ctx.timeout), job.attempt, job.max_attempts)
            self._record_quietly(args.file_id, status, message)
            raise
        except Exception as exc:
            status, message = retry_message(transient_message(exc), job.attempt, job.max_attempts)
            self._record_quietly(args.file_id, status, message)
            log.warning(
                "thumbnail attempt failed",
                extra={"file_id": fid, "job_id": job.id, "attempt": job.attempt, "error": str(exc), "status": status},
            )
            raise

    def _record_quietly(self, file_id: uuid.UUID, status: str, message: str) -> None:
        """Best effort: if the database is what failed, the row keeps its last status; River retries anyway."""
        try:
            self.db.thumbnail_error(file_id, status, message)
        except Exception as exc:
            log.warning("could not record the thumbnail error", extra={"file_id": str(file_id), "error": str(exc)})

    def _row(self, args: ThumbnailArgs) -> FileRow:
        row = self.db.file_row(args.file_id)
        if row is None:
            if self.db.rls_applies is False:
                raise PermanentError(f"no metadata.files row {args.file_id}: it was deleted")
            role = self.db.role or "of the worker"
            raise RowHidden(
                f"no metadata.files row {args.file_id} visible: deleted, or "
                + RLS_READ_HINT.format(role=role)
                + "; will retry"
            )
        if args.legacy_key is not None and args.legacy_key != row.original_key:
            log.warning(
                "job args name another key than the files row; using the row",
                extra={"file_id": str(args.file_id), "args_key": args.legacy_key, "row_key": row.original_key},
            )
        return row

    def _deaths(self, job: Job) -> int:
        """Worker deaths before this attempt (the job's errors are read only once it has enough)."""
        if job.error_count < MAX_WORKER_DEATHS:
            return 0
        try:
            return worker_deaths(self.db.job_errors(job.id))
        except Exception as exc:  # best effort: not knowing must not cost the thumbnail
            log.warning("could not read the job's errors", extra={"job_id": job.id, "error": str(exc).strip()})
            return 0

    def _run(self, job: Job, ctx: JobContext, args: ThumbnailArgs) -> dict[str, Any]:
        t0 = time.perf_counter()
        deaths = self._deaths(job)
        if deaths >= MAX_WORKER_DEATHS:
            raise InputError(deaths_message(deaths))
        row = self._row(args)
        if self.db.thumbnail_processing(args.file_id) == 0:
            raise UpdateBlocked(f"UPDATE of metadata.files row {args.file_id} matched no row: {RLS_HINT}")
        if kind_of_type(row.file_type) is Kind.OTHER:
            # Decided from the declared type alone: no need to download what we would refuse anyway.
            _, _, reason = choose_renderer(row.file_type, b"\x00")
            raise InputError(reason or "Not an image or a PDF.")
        ctx.raise_if_cancelled()
        data = self.storage.download(row.bucket, row.original_key, self.settings.max_bytes)
        t_download = time.perf_counter()
        ctx.raise_if_cancelled()
        fmt, rendered = render(row.file_type, data, self.settings)
        del data
        t_render = time.perf_counter()
        keys: dict[str, str] = {}
        for r in rendered:
            ctx.raise_if_cancelled()
            key = thumbnail_key(row.original_key, r.name, r.ext)
            self.storage.upload(row.bucket, key, r.data, r.content_type)
            keys[r.name] = key
        ctx.raise_if_cancelled()
        if self.db.thumbnail_completed(args.file_id, keys) == 0:
            raise UpdateBlocked(f"UPDATE of metadata.files row {args.file_id} matched no row: {RLS_HINT}")
        t_done = time.perf_counter()
        log.info(
            "thumbnails made",
            extra={
                "file_id": str(args.file_id),
                "job_id": job.id,
                "format": fmt,
                "download_ms": round((t_download - t0) * 1000, 1),
                "render_ms": round((t_render - t_download) * 1000, 1),
                "upload_ms": round((t_done - t_render) * 1000, 1),
                "sizes": {r.name: [r.width, r.height] for r in rendered},
            },
        )
        return {"keys": keys, "format": fmt}
