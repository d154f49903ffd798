"""Full batches under load: a busy process's completer gathers outcomes, and a saturated queue's next claim
waits for most of its slots; neither waits at low load, and neither waits without bound."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from civic_runner import completer as completer_module
from civic_runner.completer import FULL_BATCH, GATHER, BatchCompleter, gather_wait
from civic_runner.job import JobState
from civic_runner.outcome import Completion
from civic_runner.producer import refill_ready


@pytest.mark.parametrize(
    ("backlog", "busy", "waited", "wait"),
    [
        (1, False, 0.0, 0.0),  # idle or light load: write at once
        (FULL_BATCH - 1, False, 0.0, 0.0),
        (1, True, 0.0, GATHER),  # busy: gather
        (FULL_BATCH - 1, True, 0.002, GATHER - 0.002),
        (FULL_BATCH, True, 0.0, 0.0),  # a full batch goes at once
        (FULL_BATCH * 3, True, 0.0, 0.0),
        (10, True, GATHER, 0.0),  # gathered long enough
        (10, True, GATHER * 4, 0.0),
    ],
)
def test_gather_wait(backlog: int, busy: bool, waited: float, wait: float) -> None:
    assert gather_wait(backlog, busy, waited) == pytest.approx(wait)


@pytest.mark.parametrize(
    ("free", "max_workers", "ready"),
    [
        (1, 1, True),
        (0, 1, False),
        (8, 9, True),  # nine tenths rounded down: all but one below ten workers
        (9, 10, True),
        (8, 10, False),
        (899, 1000, False),
        (900, 1000, True),
        (1000, 1000, True),
    ],
)
def test_refill_ready(free: int, max_workers: int, ready: bool) -> None:
    assert refill_ready(free, max_workers) is ready


class FakeDriver:
    """Records the batches written; every outcome lands."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def complete_many(self, conn: Any, completions: list[Completion]) -> dict[int, tuple[str, bool]]:
        self.batches.append(len(completions))
        return {c.job_id: (c.state.value, True) for c in completions}


class FakePool:
    @asynccontextmanager
    async def connection(self, timeout: float | None = None) -> AsyncIterator[None]:
        yield None


async def trickle(completer: BatchCompleter, n: int, every: float) -> None:
    for i in range(n):
        completer.submit(Completion(i + 1, JobState.COMPLETED, run_attempt=1, finalize=True))
        await asyncio.sleep(every)


async def written(busy: bool, n: int, every: float) -> tuple[list[int], float]:
    driver = FakeDriver()
    completer = BatchCompleter(FakePool(), driver, busy=lambda: busy)  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(completer.run())
    started = loop.time()
    await trickle(completer, n, every)
    assert await completer.drain(5.0)
    await task
    return driver.batches, loop.time() - started


def test_light_load_writes_each_outcome_at_once() -> None:
    batches, _ = asyncio.run(written(busy=False, n=5, every=0.002))
    assert batches == [1, 1, 1, 1, 1]


def test_busy_process_gathers_outcomes_for_a_bounded_time() -> None:
    batches, _ = asyncio.run(written(busy=True, n=40, every=0.0005))
    assert sum(batches) == 40
    # 40 outcomes over ~20 ms (or more on a slow machine) in writes gathering 5 ms each: a few writes, not 40.
    assert 2 <= len(batches) <= 12, batches


def test_busy_process_writes_a_full_batch_without_waiting() -> None:
    async def main() -> list[int]:
        driver = FakeDriver()
        completer = BatchCompleter(FakePool(), driver, busy=lambda: True)  # type: ignore[arg-type]
        for i in range(FULL_BATCH):
            completer.submit(Completion(i + 1, JobState.COMPLETED, run_attempt=1, finalize=True))
        task = asyncio.create_task(completer.run())
        await asyncio.sleep(GATHER / 5)  # less than the gathering time: only a full batch is written by now
        batches = list(driver.batches)
        assert await completer.drain(5.0)
        await task
        return batches

    assert asyncio.run(main()) == [FULL_BATCH]


def test_drain_does_not_wait_to_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(completer_module, "GATHER", 30.0)  # a stop must not sit out the gathering

    async def main() -> float:
        driver = FakeDriver()
        completer = BatchCompleter(FakePool(), driver, busy=lambda: True)  # type: ignore[arg-type]
        task = asyncio.create_task(completer.run())
        completer.submit(Completion(1, JobState.COMPLETED, run_attempt=1, finalize=True))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await completer.drain(5.0)
        await task
        assert driver.batches == [1]
        return loop.time() - t0

    assert asyncio.run(main()) < 1.0
