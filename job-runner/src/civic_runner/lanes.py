"""Runs a producer's jobs on a few long-lived tasks ("lanes") instead of one task per job.

Creating and scheduling a task per job was the largest share of the runner's CPU per job (bench/RESULTS.md,
"Profile"). On a lane, a job that finishes without waiting for anything costs no task and no trip through
the event loop: the lane goes straight on to the next queued job. A job that does wait keeps its lane, and
at that moment a new lane starts if jobs are queued and no other lane is free to take them, so waiting jobs
still run side by side, up to one lane per job, as tasks of their own would.

What a job sees is what a task of its own would give it: it runs inside a real task (asyncio.current_task(),
asyncio.timeout() work), in its own copy of the context (a ContextVar it sets does not reach the next job),
and cancelling the lane's task while it runs a job cancels that job (the lane clears the cancellation
afterwards, so it cannot reach the next job). This is what Python 3.12's eager tasks give; the runner image
has Python 3.11.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import types
from collections import deque
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import Any, Generic, TypeVar

log = logging.getLogger("civic_runner.lanes")

T = TypeVar("T")

# Jobs a lane runs back to back before it lets the loop run the others (the completer among them), so the
# database writes the first outcomes of a claim while this process runs the rest instead of the two taking
# turns (bench/RESULTS.md, "Throughput with the database on a core of its own").
YIELD_EVERY = 250


@types.coroutine
def _carry_on(coro: Coroutine[Any, Any, None], yielded: Any, context: contextvars.Context) -> Generator[Any, Any, None]:
    """Go on with a coroutine that was stepped by hand and yielded `yielded`: pass what it waits for up to
    the lane's task, and what the task sends or throws back down to it, each step in the job's context."""
    while True:
        try:
            sent = yield yielded
        except BaseException as exc:  # noqa: BLE001 - thrown in by the task (a cancellation): the job's to handle
            try:
                yielded = context.run(coro.throw, exc)
            except StopIteration:
                return
        else:
            try:
                yielded = context.run(coro.send, sent)
            except StopIteration:
                return


class Lanes(Generic[T]):
    """Runs `run(item)` for each submitted item, on as few tasks as keep waiting items from blocking others."""

    def __init__(self, run: Callable[[T], Coroutine[Any, Any, None]], name: str) -> None:
        self._run = run
        self._name = name
        self._queue: deque[T] = deque()
        self._free = 0  # lanes that will take from the queue without being woken: not waiting inside a job
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def count(self) -> int:
        return len(self._tasks)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def submit(self, items: Iterable[T]) -> None:
        self._queue.extend(items)
        if self._queue and self._free == 0:
            self._spawn()

    def _spawn(self) -> None:
        self._free += 1
        task = asyncio.create_task(self._lane(), name=f"{self._name}-lane")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lane(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        base = contextvars.copy_context()
        ran = 0
        try:
            while self._queue:
                item = self._queue.popleft()
                context = base.copy()
                coro = self._run(item)
                try:
                    yielded = context.run(coro.send, None)
                except StopIteration:
                    pass  # finished without waiting: the common case, no task and no loop turn
                except Exception:
                    log.exception("job runner raised", extra={"lane": self._name})
                else:
                    # The job waits, holding this lane: let another lane take the queue meanwhile.
                    self._free -= 1
                    if self._queue and self._free == 0:
                        self._spawn()
                    try:
                        await _carry_on(coro, yielded, context)
                    except Exception:
                        log.exception("job runner raised", extra={"lane": self._name})
                    finally:
                        self._free += 1
                # A cancellation meant for the job just run must not reach the next one.
                while task.cancelling():
                    task.uncancel()
                ran += 1
                if ran % YIELD_EVERY == 0 and self._queue:
                    await asyncio.sleep(0)
        finally:
            self._free -= 1
            if self._queue and self._free == 0:  # left by an exception: the queue must not be stranded
                self._spawn()
