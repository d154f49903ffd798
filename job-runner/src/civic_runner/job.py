"""The job as a worker sees it, and the context it runs in."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from civic_runner.errors import PermanentError


class JobState(StrEnum):
    AVAILABLE = "available"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    DISCARDED = "discarded"
    PENDING = "pending"
    RETRYABLE = "retryable"
    RUNNING = "running"
    SCHEDULED = "scheduled"


FINALIZED_STATES = frozenset({JobState.CANCELLED, JobState.COMPLETED, JobState.DISCARDED})


@dataclass(frozen=True)
class Job:
    """A claimed row of river_job (state running)."""

    id: int
    kind: str
    queue: str
    args: Any  # decoded jsonb; usually a dict, but rows written by others may hold anything
    attempt: int
    max_attempts: int
    priority: int
    metadata: Any
    errors: list[Any]
    attempted_at: datetime
    scheduled_at: datetime
    created_at: datetime
    tags: list[str] = field(default_factory=list)

    def args_object(self) -> dict[str, Any]:
        """The args as a JSON object, or a permanent failure: bad input never gets better."""
        if not isinstance(self.args, dict):
            raise PermanentError(f"args must be a JSON object, got {type(self.args).__name__}: {str(self.args)[:200]}")
        return self.args

    @property
    def metadata_dict(self) -> dict[str, Any]:
        return self.metadata if isinstance(self.metadata, dict) else {}


class JobContext:
    """Handed to a worker: cooperative cancellation and the deadline.

    Sync workers run in threads that cannot be interrupted, so long work should check
    `cancelled` (or call `raise_if_cancelled`) between steps.
    """

    def __init__(self, job: Job, timeout: float | None) -> None:
        self.job = job
        self.timeout = timeout
        self._cancelled = threading.Event()
        self.cancel_reason = ""

    def cancel(self, reason: str) -> None:
        self.cancel_reason = reason
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def wait_cancelled(self, timeout: float) -> bool:
        return self._cancelled.wait(timeout)

    def raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise InterruptedError(self.cancel_reason or "job cancelled")
