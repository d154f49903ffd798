"""Lanes: jobs on a few long-lived tasks, with what a task per job would give each of them."""

from __future__ import annotations

import asyncio
import contextvars

import pytest
from civic_runner import lanes
from civic_runner.lanes import Lanes

pytestmark = pytest.mark.unit

TAG: contextvars.ContextVar[str] = contextvars.ContextVar("TAG", default="")


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_jobs_that_never_wait_share_one_lane_and_all_run() -> None:
    async def main() -> tuple[list[int], set[int]]:
        done: list[int] = []
        tasks: set[int] = set()

        async def job(n: int) -> None:
            t = asyncio.current_task()
            assert t is not None
            tasks.add(id(t))
            done.append(n)

        ln: Lanes[int] = Lanes(job, "t")
        ln.submit(range(1000))
        while ln.count:
            await asyncio.sleep(0)
        return done, tasks

    done, tasks = run(main())
    assert done == list(range(1000))  # in order, each once
    assert len(tasks) == 1  # one lane, a real task


def test_waiting_jobs_run_side_by_side() -> None:
    async def main() -> tuple[float, int]:
        loop = asyncio.get_running_loop()
        peak = 0
        ln: Lanes[int] = Lanes(lambda n: asyncio.sleep(0.2), "t")  # type: ignore[arg-type,return-value]
        t0 = loop.time()
        ln.submit(range(50))
        while ln.count:
            peak = max(peak, ln.count)
            await asyncio.sleep(0.01)
        return loop.time() - t0, peak

    elapsed, peak = run(main())
    assert elapsed < 1.0  # 50 x 0.2 s one after the other would be 10 s
    assert peak == 50


def test_a_lane_lets_the_loop_run_between_long_runs_of_quick_jobs() -> None:
    async def main() -> list[int]:
        seen: list[int] = []
        done = 0

        async def job(n: int) -> None:
            nonlocal done
            done += 1

        async def other() -> None:
            seen.append(done)

        ln: Lanes[int] = Lanes(job, "t")
        ln.submit(range(lanes.YIELD_EVERY * 3))
        asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(other()))
        while ln.count:
            await asyncio.sleep(0)
        return seen

    seen = run(main())
    assert seen and 0 < seen[0] < lanes.YIELD_EVERY * 3


def test_each_job_has_its_own_context() -> None:
    async def main() -> list[str]:
        seen: list[str] = []

        async def job(n: int) -> None:
            seen.append(TAG.get())
            TAG.set(f"job {n}")
            if n % 2:
                await asyncio.sleep(0)
            seen.append(TAG.get())

        ln: Lanes[int] = Lanes(job, "t")
        ln.submit(range(4))
        while ln.count:
            await asyncio.sleep(0.01)
        return seen

    seen = run(main())
    assert sorted(s for s in seen if s == "") == [""] * 4  # no job saw another's value
    assert sorted(s for s in seen if s) == ["job 0", "job 1", "job 2", "job 3"]


def test_asyncio_timeout_works_inside_a_job() -> None:
    async def main() -> list[str]:
        out: list[str] = []

        async def job(n: int) -> None:
            try:
                async with asyncio.timeout(0.05):
                    await asyncio.sleep(5 if n == 0 else 0)
                out.append(f"{n} ok")
            except TimeoutError:
                out.append(f"{n} timed out")

        ln: Lanes[int] = Lanes(job, "t")
        ln.submit(range(3))
        while ln.count:
            await asyncio.sleep(0.01)
        return out

    assert sorted(run(main())) == ["0 timed out", "1 ok", "2 ok"]


def test_cancelling_the_lane_cancels_only_the_job_it_runs() -> None:
    async def main() -> dict[int, str]:
        ended: dict[int, str] = {}
        holder: dict[int, asyncio.Task[None]] = {}

        async def job(n: int) -> None:
            t = asyncio.current_task()
            assert t is not None
            holder[n] = t
            if n:
                # Code that asks whether its task is being cancelled (TaskGroup, asyncio.timeout) must hear no.
                assert t.cancelling() == 0, t.cancelling()
            try:
                await asyncio.sleep(0.3 if n == 0 else 0.01)
                # After a cancel was handled, the same lane's next job must be able to wait.
                await asyncio.sleep(0)
                ended[n] = "done"
            except asyncio.CancelledError:
                ended[n] = "cancelled"
                ln.submit([3])  # queued as this job ends: its lane takes it next

        ln: Lanes[int] = Lanes(job, "t")
        ln.submit([0, 1, 2])  # 1 and 2 wait, on 0's lane or on another
        await asyncio.sleep(0.05)
        holder[0].cancel()
        holder[0].cancel()  # twice, as a timeout and a remote cancel might
        while ln.count:
            await asyncio.sleep(0.01)
        assert holder[3] is holder[0]
        return ended

    assert run(main()) == {0: "cancelled", 1: "done", 2: "done", 3: "done"}


def test_a_job_that_raises_does_not_strand_the_queue() -> None:
    async def main() -> list[int]:
        done: list[int] = []

        async def job(n: int) -> None:
            if n == 1:
                raise RuntimeError("boom")
            if n == 3:
                await asyncio.sleep(0)
                raise RuntimeError("boom after a wait")
            done.append(n)

        ln: Lanes[int] = Lanes(job, "t")
        ln.submit(range(6))
        while ln.count:
            await asyncio.sleep(0.01)
        return done

    assert run(main()) == [0, 2, 4, 5]
