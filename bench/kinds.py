"""The no-op kind benchmarks use (like River bench's `benchmark` kind: args {"num": n})."""

from __future__ import annotations

from civic_runner import Job, JobContext, kind


@kind("benchmark")
async def benchmark(job: Job, ctx: JobContext) -> None:
    return None
