"""Job kinds used by the runner's tests (the file pipeline has its own kinds)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import psycopg
from civic_runner import Job, JobCancel, JobContext, JobSnooze, PermanentError, Registry

registry = Registry()
_conn_local: dict[int, psycopg.Connection[Any]] = {}


def _record(job: Job) -> None:
    """Write one row per execution, so tests can prove no job ran twice."""
    url = os.environ.get("TEST_RECORD_URL") or os.environ["DATABASE_URL"]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO test_runs (job_id, attempt, pid) VALUES (%s, %s, %s)", (job.id, job.attempt, os.getpid())
        )


@registry.kind("noop")
async def noop(job: Job, ctx: JobContext) -> None:
    return None


@registry.kind("echo")
def echo(job: Job, ctx: JobContext) -> Any:
    return job.args_object().get("value")


@registry.kind("record")
def record(job: Job, ctx: JobContext) -> None:
    """Args {"sleep": S, "sleep_attempts": K}: sleep S s on attempts up to K (all without K), so a job can
    hang once and then complete (the Go interop worker reads the same args)."""
    args = job.args_object()
    _record(job)
    if "sleep_attempts" not in args or job.attempt <= int(args["sleep_attempts"]):
        time.sleep(float(args.get("sleep", 0)))


@registry.kind("gate")
def gate(job: Job, ctx: JobContext) -> None:
    """Records its execution, then blocks until the file named by args.gate exists (a test's signal
    that it has put its fault in place), at most args.max_wait seconds."""
    args = job.args_object()
    _record(job)
    path, deadline = str(args["gate"]), time.monotonic() + float(args.get("max_wait", 60))
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)


@registry.kind("fail")
def fail(job: Job, ctx: JobContext) -> None:
    raise ValueError("boom")


@registry.kind("permanent")
def permanent(job: Job, ctx: JobContext) -> None:
    raise PermanentError("this input can never succeed")


@registry.kind("cancel")
def cancel(job: Job, ctx: JobContext) -> None:
    raise JobCancel("no longer wanted")


@registry.kind("snooze")
def snooze(job: Job, ctx: JobContext) -> None:
    if job.metadata_dict.get("snoozes", 0) < int(job.args_object().get("times", 1)):
        raise JobSnooze(float(job.args_object().get("seconds", 0.05)))


@registry.kind("sleep")
def sleep(job: Job, ctx: JobContext) -> None:
    """Sleeps cooperatively: stops early when its context is cancelled."""
    if ctx.wait_cancelled(float(job.args_object().get("seconds", 1))):
        ctx.raise_if_cancelled()


@registry.kind("async_sleep")
async def async_sleep(job: Job, ctx: JobContext) -> None:
    await asyncio.sleep(float(job.args_object().get("seconds", 1)))


@registry.kind("quick_timeout", timeout=0.2)
async def quick_timeout(job: Job, ctx: JobContext) -> None:
    await asyncio.sleep(5)


# What `civic-runner run --kinds-modules tests.support.kinds` registers in a subprocess.
from civic_runner import default_registry  # noqa: E402

for name in registry.kinds():
    w = registry.get(name)
    assert w is not None
    default_registry.add(name, w.fn, timeout=w.timeout)
