"""Runs one job's worker and turns how it ended into an Outcome. Never raises."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import traceback

from civic_runner import lanes
from civic_runner.errors import JobCancel, JobSnooze, PermanentError
from civic_runner.job import Job, JobContext, decode_problem
from civic_runner.outcome import Ending, Outcome
from civic_runner.registry import Worker

log = logging.getLogger("civic_runner.executor")

# Why a running job was stopped from outside; decides its outcome.
STOP_REMOTE_CANCEL = "job cancelled remotely"
STOP_SHUTDOWN = "runner shutting down"
STOP_TIMEOUT = "timeout"
COMPLETED = Outcome(Ending.COMPLETED)  # a worker that returned nothing: shared, Outcome is frozen

_TRACE_LIMIT = 4000  # characters of a trace kept (its end: the innermost frames and the message)
# Frames that only carry a job to its worker (this module, the lanes, asyncio, the thread pool): left out
# of traces.
_CARRIER_DIRS = tuple(os.path.dirname(m.__file__ or "") + os.sep for m in (asyncio, concurrent.futures))
_CARRIER_FILES = (os.path.abspath(__file__), os.path.abspath(lanes.__file__))


def unknown_kind_message(kind: str) -> str:
    return f"job kind is not registered in the client's Workers bundle: {kind}"


def _is_carrier(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path in _CARRIER_FILES or path.startswith(_CARRIER_DIRS)


def worker_traceback(exc: BaseException, limit: int = _TRACE_LIMIT) -> str:
    """The exception's traceback from the worker's own frame on (the runner's, asyncio's and the thread
    pool's leading frames say nothing about the job), at most `limit` characters, keeping the end."""
    tb = exc.__traceback__
    while tb is not None and _is_carrier(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))[-limit:]


def outcome_for_exception(exc: BaseException) -> Outcome:
    """What `trace` holds (River writes "" for returned errors and a Go stack for panics): Python has no
    such split (every failure is a raise), and an unexpected exception is what a panic is in Go, so an
    ordinary exception records the worker's traceback (worker_traceback). The worker's own signals
    (JobSnooze, JobCancel, PermanentError) and the runner's endings (unknown kind, undecodable row,
    timeout, remote cancel, rescue) are decisions, not crashes: their trace is ""."""
    if isinstance(exc, JobSnooze):
        return Outcome(Ending.SNOOZE, snooze_seconds=exc.seconds)
    if isinstance(exc, JobCancel):
        return Outcome(Ending.CANCEL, message=str(exc) or "cancelled by worker")
    if isinstance(exc, PermanentError):
        return Outcome(Ending.DISCARD, message=str(exc) or type(exc).__name__)
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Outcome(Ending.ERROR, message=message, trace=worker_traceback(exc))


def outcome_for_stop(ctx: JobContext) -> Outcome | None:
    """The outcome of a job stopped from outside, by why it was stopped (None: not stopped by us)."""
    reason = ctx.cancel_reason
    if reason == STOP_SHUTDOWN:
        return Outcome(Ending.INTERRUPT, message=STOP_SHUTDOWN)
    if reason == STOP_REMOTE_CANCEL:
        return Outcome(Ending.CANCEL, message=STOP_REMOTE_CANCEL)
    if reason == STOP_TIMEOUT:
        return Outcome(Ending.ERROR, message=f"JobTimeoutError: job exceeded its timeout of {ctx.timeout}s")
    return None


def effective_timeout(worker: Worker, default: float) -> float | None:
    t = worker.timeout if worker.timeout is not None else default
    return t if t and t > 0 else None


async def execute(
    job: Job,
    worker: Worker | None,
    ctx: JobContext,
    threads: concurrent.futures.Executor,
) -> Outcome:
    """Run the worker. Timeouts, remote cancels and shutdown arrive as a cancellation of the task
    running it (see Producer), with the reason in ctx; a thread that ignores it keeps running but its
    result is no longer waited for."""
    if ctx.cancelled:  # stopped while it waited for a lane (see lanes.py): never started
        stopped = outcome_for_stop(ctx)
        if stopped is not None:
            return stopped
    if worker is None:
        return Outcome(Ending.ERROR, message=unknown_kind_message(job.kind))
    problem = decode_problem(job)
    if problem is not None:
        return Outcome(Ending.ERROR, message=problem)
    try:
        if worker.is_async:
            result = await worker.fn(job, ctx)
        else:
            result = await asyncio.get_running_loop().run_in_executor(threads, worker.fn, job, ctx)
    except asyncio.CancelledError:
        stopped = outcome_for_stop(ctx)
        if stopped is None:
            raise
        if not worker.is_async:
            log.warning(
                "worker thread left running after its job was stopped",
                extra={"job_id": job.id, "kind": job.kind, "reason": ctx.cancel_reason},
            )
        return stopped
    except Exception as exc:
        return outcome_for_stop(ctx) or outcome_for_exception(exc)
    return COMPLETED if result is None else Outcome(Ending.COMPLETED, output=result)
