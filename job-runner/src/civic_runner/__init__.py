"""civic_runner: a River-compatible job runner for PostgreSQL, in Python."""

from civic_runner.job import Job, JobContext
from civic_runner.outcome import JobCancel, JobSnooze, PermanentError
from civic_runner.registry import Registry, default_registry, kind

__all__ = [
    "Job",
    "JobCancel",
    "JobContext",
    "JobSnooze",
    "PermanentError",
    "Registry",
    "default_registry",
    "kind",
]
