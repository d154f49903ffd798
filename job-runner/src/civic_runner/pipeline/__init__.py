"""The Civic OS file pipeline: `s3_presign` (queue s3_signer) and `thumbnail_generate` (queue thumbnails).

Importing this module reads the settings from the environment (a bad value raises ConfigError,
naming the variable) and registers both kinds on civic_runner.default_registry, so
`CIVIC_KINDS_MODULES=civic_runner.pipeline civic-runner run` serves them. Tests and embedders build
their own: `Pipeline(config).register(Registry())`.
"""

from __future__ import annotations

from civic_runner.pipeline.config import ConfigError, PipelineConfig, from_env
from civic_runner.pipeline.service import (
    KIND_PRESIGN,
    KIND_THUMBNAIL,
    QUEUE_PRESIGN,
    QUEUE_THUMBNAILS,
    Pipeline,
)
from civic_runner.registry import default_registry

__all__ = [
    "KIND_PRESIGN",
    "KIND_THUMBNAIL",
    "QUEUE_PRESIGN",
    "QUEUE_THUMBNAILS",
    "ConfigError",
    "Pipeline",
    "PipelineConfig",
    "default_pipeline",
    "from_env",
]

default_pipeline = Pipeline(from_env())
default_pipeline.register(default_registry)
default_pipeline.warm_in_background()  # no network, no database: only the S3 clients' CPU work
