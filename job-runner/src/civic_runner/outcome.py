"""How a job run ends, and the pure mapping from that ending to the row River expects.

Workers signal endings other than success by raising one of the exceptions below; any other
exception is an ordinary error that is retried with River's backoff until max_attempts.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from civic_runner.errors import JobCancel, JobSnooze, PermanentError
from civic_runner.job import Job, JobState
from civic_runner.retry import next_retry_at

__all__ = [
    "Completion",
    "Ending",
    "JobCancel",
    "JobSnooze",
    "Outcome",
    "PermanentError",
    "plan_completed",
    "plan_completion",
]


class Ending(enum.Enum):
    COMPLETED = "completed"
    ERROR = "error"
    CANCEL = "cancel"
    DISCARD = "discard"
    SNOOZE = "snooze"
    INTERRUPT = "interrupt"  # our own shutdown stopped it: give the attempt back


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    message: str = ""
    trace: str = ""
    snooze_seconds: float = 0.0
    output: Any = None


@dataclass(slots=True)
class Completion:
    """One row of a batched completion (see driver.complete_many). Not frozen: one is made per job, and a
    frozen dataclass's __init__ costs more; nobody changes one once planned."""

    job_id: int
    state: JobState
    # The attempt this outcome belongs to: a row running another attempt (ours was rescued and the job
    # claimed again) is left alone. None: written whatever the row's attempt (River's own rule).
    run_attempt: int | None = None
    finalize: bool = False
    scheduled_at: datetime | None = None
    attempt: int | None = None
    error: dict[str, Any] | None = None
    metadata_updates: dict[str, Any] | None = None


def go_time(ts: datetime) -> str:
    """Format like Go's time.RFC3339Nano in UTC: fractional zeros trimmed, `Z` suffix."""
    ts = ts.astimezone(UTC)
    base = ts.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{ts.microsecond:06d}".rstrip("0")
    return f"{base}.{frac}Z" if frac else f"{base}Z"


def error_entry_at(started_at: datetime, attempt: int, message: str, trace: str = "") -> dict[str, Any]:
    """River's AttemptError: `at` is when the failed run started, not when it failed (the rescuer
    passes the rescue time, as River's does)."""
    return {"at": go_time(started_at), "attempt": attempt, "error": message, "trace": trace}


def error_entry(job: Job, started_at: datetime, message: str, trace: str = "") -> dict[str, Any]:
    return error_entry_at(started_at, job.attempt, message, trace)


def plan_completed(job: Job, outcome: Outcome) -> Completion:
    """plan_completion of a completed run: the one ending that needs no time."""
    updates = {"output": outcome.output} if outcome.output is not None else None
    return Completion(job.id, JobState.COMPLETED, run_attempt=job.attempt, finalize=True, metadata_updates=updates)


def plan_completion(
    job: Job,
    outcome: Outcome,
    *,
    started_at: datetime,
    now: datetime,
    scheduler_interval: float = 5.0,
    rand: random.Random | None = None,
) -> Completion:
    """Map a run's outcome to the state change River's executor would make."""
    ending = outcome.ending
    if ending is Ending.COMPLETED:
        return plan_completed(job, outcome)
    if ending is Ending.CANCEL:
        entry = error_entry(job, started_at, f"JobCancelError: {outcome.message}", outcome.trace)
        return Completion(job.id, JobState.CANCELLED, run_attempt=job.attempt, finalize=True, error=entry)
    if ending is Ending.DISCARD:
        entry = error_entry(job, started_at, outcome.message, outcome.trace)
        return Completion(job.id, JobState.DISCARDED, run_attempt=job.attempt, finalize=True, error=entry)
    if ending is Ending.SNOOZE:
        at = now + timedelta(seconds=outcome.snooze_seconds)
        state = JobState.AVAILABLE if outcome.snooze_seconds <= scheduler_interval else JobState.SCHEDULED
        snoozes = int(job.metadata_dict.get("snoozes", 0) or 0) + 1
        return Completion(
            job.id,
            state,
            run_attempt=job.attempt,
            scheduled_at=at,
            attempt=max(job.attempt - 1, 0),
            metadata_updates={"snoozes": snoozes},
        )
    if ending is Ending.INTERRUPT:
        return Completion(
            job.id, JobState.AVAILABLE, run_attempt=job.attempt, scheduled_at=now, attempt=max(job.attempt - 1, 0)
        )
    # An ordinary error.
    entry = error_entry(job, started_at, outcome.message, outcome.trace)
    if job.attempt >= job.max_attempts:
        return Completion(job.id, JobState.DISCARDED, run_attempt=job.attempt, finalize=True, error=entry)
    at = next_retry_at(now, job.error_count, rand)
    state = JobState.AVAILABLE if (at - now).total_seconds() <= scheduler_interval else JobState.RETRYABLE
    return Completion(job.id, state, run_attempt=job.attempt, scheduled_at=at, error=entry)
