"""Where job kinds are registered: one function (sync or async) per kind."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from civic_runner.access import Need
from civic_runner.job import Job, JobContext

WorkFn = Callable[[Job, JobContext], Any]


@dataclass(frozen=True)
class Worker:
    kind: str
    fn: WorkFn
    is_async: bool
    timeout: float | None  # None: use the runner's default job timeout; <= 0: no timeout


class Registry:
    def __init__(self) -> None:
        self._workers: dict[str, Worker] = {}
        self._needs: list[Need] = []

    def kind(self, name: str, *, timeout: float | None = None) -> Callable[[WorkFn], WorkFn]:
        """Decorator: `@registry.kind("s3_presign")` on `def work(job, ctx)` or `async def`."""

        def register(fn: WorkFn) -> WorkFn:
            self.add(name, fn, timeout=timeout)
            return fn

        return register

    def add(self, name: str, fn: WorkFn, *, timeout: float | None = None) -> None:
        if name in self._workers:
            raise ValueError(f"job kind {name!r} is registered twice")
        self._workers[name] = Worker(name, fn, inspect.iscoroutinefunction(fn), timeout)

    def require(self, table: str, *privileges: str) -> None:
        """A table (in the runner's schema) and the privileges the registered kinds use on it: checked
        at start-up, so a missing grant is reported before any job fails on it."""
        self._needs.append(Need(table, tuple(privileges)))

    def needs(self) -> list[Need]:
        return list(self._needs)

    def get(self, name: str) -> Worker | None:
        return self._workers.get(name)

    def kinds(self) -> list[str]:
        return sorted(self._workers)


default_registry = Registry()
kind = default_registry.kind
