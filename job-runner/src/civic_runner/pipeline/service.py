"""The pipeline as one object: its settings, its database pool and S3 clients (both opened on first
use), and the two job kinds, ready to register on a Registry."""

from __future__ import annotations

import logging
import threading
from typing import Any

from civic_runner.job import Job, JobContext
from civic_runner.pipeline import presign
from civic_runner.pipeline.config import PipelineConfig
from civic_runner.pipeline.db import Database
from civic_runner.pipeline.storage import Storage
from civic_runner.pipeline.thumbnail import ThumbnailWorker
from civic_runner.registry import Registry

log = logging.getLogger("civic_runner.pipeline")

KIND_PRESIGN = "s3_presign"
KIND_THUMBNAIL = "thumbnail_generate"
QUEUE_PRESIGN = "s3_signer"
QUEUE_THUMBNAILS = "thumbnails"


class Pipeline:
    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self.db = Database(
            config.database_url, config.schema, config.db_max_conns, statement_timeout=config.db_statement_timeout
        )
        self.storage = Storage(config.s3)
        self.thumbnails = ThumbnailWorker(self.db, self.storage, config.thumbnails)
        for warning in config.warnings:
            log.warning(warning, extra={"deprecated": True})

    def warm(self) -> None:
        """Build the S3 clients now (~0.1 s of CPU each, no network), so the first upload request
        does not wait for them: the frontend gives presigning 10 s, and p99 matters."""
        try:
            _ = self.storage.signer
            _ = self.storage.client
        except Exception as exc:  # a job will report the same problem with its context
            log.warning("could not prepare the S3 clients", extra={"error": str(exc)})

    def warm_in_background(self) -> None:
        threading.Thread(target=self.warm, name="pipeline-warm", daemon=True).start()

    def presign(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        return presign.run(self.db, self.storage, job, ctx)

    def thumbnail(self, job: Job, ctx: JobContext) -> dict[str, Any]:
        return self.thumbnails(job, ctx)

    def register(self, registry: Registry) -> Registry:
        registry.add(KIND_PRESIGN, self.presign)
        registry.add(KIND_THUMBNAIL, self.thumbnail)
        # Exactly what the two kinds do (docs/civic-os.md's worker role grants these and no more).
        registry.require("file_upload_requests", "SELECT", "UPDATE")
        registry.require("files", "SELECT", "UPDATE")
        return registry

    def close(self) -> None:
        self.db.close()
