"""Where the bench's processes run: by default anywhere (the machine's cores shared, as in CI and a small
node), or with `--split-cores` the database on cores of its own and the systems measured on the others, as
in production, where PostgreSQL is another machine. With 2 cores that is one each.

Affinity is set with sched_setaffinity: on the database's processes once it runs (the backends it forks
later inherit the postmaster's), and in each system process and pgbench before it executes, so that every
thread it starts inherits it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from bench import cpu


@dataclass
class Placement:
    database: frozenset[int] | None = None
    systems: frozenset[int] | None = None

    def split_cores(self) -> None:
        """The last core for the database, the others for the systems (and the bench)."""
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            raise SystemExit("--split-cores needs at least 2 cores")
        self.database, self.systems = frozenset(cores[-1:]), frozenset(cores[:-1])

    def describe(self) -> str:
        if self.database is None:
            return "shared cores"
        return f"database on CPU {sorted(self.database)}, systems on CPU {sorted(self.systems or ())}"

    def pin_database(self, postmaster: int) -> None:
        if self.database is None:
            return
        procs = cpu.snapshot()
        children: dict[int, list[int]] = {}
        for t in procs.values():
            children.setdefault(t.ppid, []).append(t.pid)
        todo = [postmaster]
        while todo:
            pid = todo.pop()
            try:
                os.sched_setaffinity(pid, self.database)
            except ProcessLookupError:
                continue
            todo.extend(children.get(pid, ()))

    def shares(self, window: cpu.Window, wall: float) -> dict[str, float]:
        """How much of the machine the VM had over a window: cores taken by the hypervisor (steal, inside
        the busy figures), and with the database on cores of its own, the share of them left idle (it
        waited for its clients rather than they for it)."""
        out = {"steal_cores": window.machine_steal / wall}
        if self.database:
            out["db_cores_idle"] = window.db_cores_idle / wall / len(self.database)
        return out

    def preexec(self) -> Callable[[], None] | None:
        """For subprocess.Popen(preexec_fn=...): the systems' cores, set in the child before it executes."""
        systems = self.systems
        if systems is None:
            return None
        return lambda: os.sched_setaffinity(0, systems)


PLACEMENT = Placement()  # the run's, one object: bench.throughput and bench.ceiling set it from their flags
