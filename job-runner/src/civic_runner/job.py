"""The job as a worker sees it, and the context it runs in."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


_UNDECODED: Any = object()

# PostgreSQL sends a timestamptz in binary as microseconds since its epoch: the claim keeps that integer
# (driver.claim) and a job builds a datetime only when asked (most never are).
PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)
PG_EPOCH_UNIX = 946_684_800.0  # PG_EPOCH in seconds since 1970
_US = timedelta(microseconds=1)


def pg_micros(t: datetime) -> int:
    """A datetime as PostgreSQL's binary timestamptz: microseconds since 2000-01-01 UTC."""
    return (t - PG_EPOCH) // _US


# PostgreSQL also holds -infinity, infinity and years Python's datetime cannot (up to 294276, or before
# Christ). The runner uses these times only for ordering and metrics, so a datetime is clamped a day
# inside Python's range; the integer keeps the exact value.
_MIN_US = pg_micros(datetime(1, 1, 2, tzinfo=UTC))
_MAX_US = pg_micros(datetime(9999, 12, 30, tzinfo=UTC))


def pg_time(us: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=min(max(us, _MIN_US), _MAX_US))


@dataclass(slots=True, eq=False)
class Job:
    """A claimed row of river_job (state running). Read-only by convention: the runner builds hundreds
    of these per claim, and a frozen dataclass's __init__ cost twice as much (bench.profile_runner).

    args and metadata arrive as JSON text, are decoded once (`decode_problem`, before the worker
    runs) and kept.
    """

    id: int
    kind: str
    queue: str
    args_json: str
    attempt: int
    max_attempts: int
    priority: int
    metadata_json: str
    error_count: int  # errors recorded before this attempt (River's retry policy counts these)
    attempted_us: int  # the row's times as PostgreSQL's microseconds (pg_micros); datetimes below
    scheduled_us: int
    created_us: int
    tags: list[str] = field(default_factory=list)
    _args: Any = field(default=_UNDECODED, init=False, repr=False)
    _metadata: Any = field(default=_UNDECODED, init=False, repr=False)

    @property
    def attempted_at(self) -> datetime:
        return pg_time(self.attempted_us)

    @property
    def scheduled_at(self) -> datetime:
        return pg_time(self.scheduled_us)

    @property
    def created_at(self) -> datetime:
        return pg_time(self.created_us)

    def seconds_since_scheduled(self, unix_now: float) -> float:
        """From scheduled_at to a time.time() value, without building a datetime (the claim-lag metric)."""
        return unix_now - PG_EPOCH_UNIX - self.scheduled_us / 1_000_000

    @property
    def args(self) -> Any:
        """Decoded args: usually an object, but rows written by others may hold any JSON."""
        if self._args is _UNDECODED:
            self._args = json.loads(self.args_json)
        return self._args

    @property
    def metadata(self) -> Any:
        if self._metadata is _UNDECODED:
            # Most rows' metadata is River's default, '{}': no need for the decoder.
            self._metadata = {} if self.metadata_json == "{}" else json.loads(self.metadata_json)
        return self._metadata

    def args_object(self) -> dict[str, Any]:
        """The args as a JSON object, or a permanent failure: bad input never gets better."""
        if not isinstance(self.args, dict):
            raise PermanentError(f"args must be a JSON object, got {type(self.args).__name__}: {str(self.args)[:200]}")
        return self.args

    @property
    def metadata_dict(self) -> dict[str, Any]:
        return self.metadata if isinstance(self.metadata, dict) else {}


def decode_problem(job: Job) -> str | None:
    """Decode args and metadata now; what makes one undecodable, or None.

    PostgreSQL's jsonb holds what Python's json module refuses: nesting deeper than its recursion limit,
    integers longer than its 4300-digit conversion limit. As River (0.48) fails the attempt of a job whose
    args or metadata it cannot decode, the runner does so before the worker runs, instead of letting a
    worker that never reads them succeed, or a later use (the snooze count) fail outside the worker and
    leave the job `running` until the rescuer.
    """
    for what in ("args", "metadata"):
        try:
            getattr(job, what)  # decoded once, kept for the worker
        except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
            return f"cannot decode the job's {what}: {type(exc).__name__}: {exc}"
    return None


class JobContext:
    """Handed to a worker: cooperative cancellation and the deadline.

    Sync workers run in threads that cannot be interrupted, so long work should check
    `cancelled` (or call `raise_if_cancelled`) between steps.
    """

    def __init__(self, job: Job, timeout: float | None) -> None:
        self.job = job
        self.timeout = timeout
        self.cancel_reason = ""
        self._flag = False
        # Created only when a worker thread waits on it: most jobs never do.
        self._event: threading.Event | None = None

    def cancel(self, reason: str) -> None:
        if not self._flag:
            self.cancel_reason = reason
        self._flag = True
        if self._event is not None:
            self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._flag

    def wait_cancelled(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True as soon as the job is cancelled (for sync workers)."""
        if self._event is None:
            self._event = threading.Event()
        if self._flag:
            return True
        return self._event.wait(timeout)

    def raise_if_cancelled(self) -> None:
        if self._flag:
            raise InterruptedError(self.cancel_reason or "job cancelled")
