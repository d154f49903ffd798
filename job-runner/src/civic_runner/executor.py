"""Runs one job's worker and turns how it ended into an Outcome. Never raises."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import traceback
from typing import Any

from civic_runner.errors import JobCancel, JobSnooze, PermanentError
from civic_runner.job import Job, JobContext
from civic_runner.outcome import Ending, Outcome
from civic_runner.registry import Worker

log = logging.getLogger("civic_runner.executor")

# Why a running job was stopped from outside; decides its outcome.
STOP_REMOTE_CANCEL = "job cancelled remotely"
STOP_SHUTDOWN = "runner shutting down"

# After a sync worker's deadline, how long to wait for it to notice before giving up on the thread.
SYNC_TIMEOUT_GRACE = 10.0
_TRACE_LIMIT = 4000


def unknown_kind_message(kind: str) -> str:
    return f"job kind is not registered in the client's Workers bundle: {kind}"


def outcome_for_exception(exc: BaseException) -> Outcome:
    if isinstance(exc, JobSnooze):
        return Outcome(Ending.SNOOZE, snooze_seconds=exc.seconds)
    if isinstance(exc, JobCancel):
        return Outcome(Ending.CANCEL, message=str(exc) or "cancelled by worker")
    if isinstance(exc, PermanentError):
        return Outcome(Ending.DISCARD, message=str(exc) or type(exc).__name__)
    trace = "".join(traceback.format_exception(exc))[-_TRACE_LIMIT:]
    message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return Outcome(Ending.ERROR, message=message, trace=trace)


def effective_timeout(worker: Worker, default: float) -> float | None:
    t = worker.timeout if worker.timeout is not None else default
    return t if t and t > 0 else None


async def execute(
    job: Job,
    worker: Worker | None,
    ctx: JobContext,
    threads: concurrent.futures.Executor,
) -> Outcome:
    if worker is None:
        return Outcome(Ending.ERROR, message=unknown_kind_message(job.kind))
    try:
        result = await _call(job, worker, ctx, threads)
    except asyncio.CancelledError:
        # Stopped from outside: by our shutdown (give the attempt back) or a remote cancel.
        if ctx.cancel_reason == STOP_SHUTDOWN:
            return Outcome(Ending.INTERRUPT, message=STOP_SHUTDOWN)
        if ctx.cancel_reason == STOP_REMOTE_CANCEL:
            return Outcome(Ending.CANCEL, message=STOP_REMOTE_CANCEL)
        raise
    except TimeoutError:
        return Outcome(Ending.ERROR, message=f"JobTimeoutError: job exceeded its timeout of {ctx.timeout}s")
    except Exception as exc:
        if ctx.cancel_reason == STOP_REMOTE_CANCEL:
            return Outcome(Ending.CANCEL, message=STOP_REMOTE_CANCEL)
        return outcome_for_exception(exc)
    return Outcome(Ending.COMPLETED, output=result)


async def _call(job: Job, worker: Worker, ctx: JobContext, threads: concurrent.futures.Executor) -> Any:
    timeout = ctx.timeout
    if worker.is_async:
        return await asyncio.wait_for(worker.fn(job, ctx), timeout)
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(threads, worker.fn, job, ctx)
    try:
        return await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        # A thread cannot be killed: ask it to stop, give it a moment, then stop waiting.
        ctx.cancel("timeout")
        try:
            await asyncio.wait_for(asyncio.shield(fut), SYNC_TIMEOUT_GRACE)
        except (TimeoutError, Exception):
            if not fut.done():
                log.warning("worker thread ignored its deadline", extra={"job_id": job.id, "kind": job.kind})
        raise TimeoutError from None
    except asyncio.CancelledError:
        ctx.cancel(ctx.cancel_reason or "cancelled")
        raise
