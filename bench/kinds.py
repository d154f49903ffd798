"""The no-op kind benchmarks use (like River bench's `benchmark` kind: args {"num": n})."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from civic_runner import Job, JobContext, kind


@kind("benchmark")
async def benchmark(job: Job, ctx: JobContext) -> None:
    return None


# `soak` (bench/fault_soak.py): one row per execution in soak_runs, written on a direct connection
# (SOAK_RECORD_URL) that the soak's faults do not touch, so duplicates are counted from the truth.
_record_pool: Any = None


async def _recorder() -> Any:
    global _record_pool
    if _record_pool is None:
        from psycopg_pool import AsyncConnectionPool

        _record_pool = AsyncConnectionPool(
            os.environ["SOAK_RECORD_URL"], min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        )
        await _record_pool.open()
    return _record_pool


@kind("soak")
async def soak(job: Job, ctx: JobContext) -> None:
    pool = await _recorder()
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO soak_runs (job_id, attempt, pid) VALUES (%s, %s, %s)", (job.id, job.attempt, os.getpid())
        )
    ms = float(job.args_object().get("ms", 0))
    if ms:
        await asyncio.sleep(ms / 1000)
