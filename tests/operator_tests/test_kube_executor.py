"""kube.PriorityExecutor: what a decision waits for runs before the writes that report decisions."""

from __future__ import annotations

import asyncio
import threading

import pytest
from civic_operator.kube import DECIDING, REPORTING, PriorityExecutor

pytestmark = pytest.mark.unit


def test_queued_calls_run_by_priority_then_in_order() -> None:
    async def scenario() -> list[str]:
        executor = PriorityExecutor(1, "test")
        release = threading.Event()
        ran: list[str] = []

        def call(name: str) -> str:
            ran.append(name)
            return name

        busy = executor.submit(REPORTING, lambda: release.wait(5))  # holds the only thread
        queued = [
            executor.submit(REPORTING, lambda: call("status a")),
            executor.submit(REPORTING, lambda: call("status b")),
            executor.submit(DECIDING, lambda: call("spec.replicas c")),
            executor.submit(DECIDING, lambda: call("spec.replicas d")),
        ]
        release.set()
        await busy
        assert await asyncio.gather(*queued) == ["status a", "status b", "spec.replicas c", "spec.replicas d"]
        return ran

    assert asyncio.run(scenario()) == ["spec.replicas c", "spec.replicas d", "status a", "status b"]


def test_a_calls_exception_reaches_its_caller() -> None:
    async def scenario() -> None:
        def fail() -> None:
            raise LookupError("gone")

        with pytest.raises(LookupError, match="gone"):
            await PriorityExecutor(1, "test").submit(DECIDING, fail)

    asyncio.run(scenario())
