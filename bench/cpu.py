"""CPU time of process trees and of the machine, from /proc (Linux), for the benchmarks' CPU columns.

A tree's CPU is every live process's own user + system time plus what its reaped children used
(`cutime`/`cstime`, which the kernel adds to a parent when it waits for a child). The difference of
two snapshots is then exact even when children come and go in between (PostgreSQL backends,
autovacuum workers), as long as the root itself lives through both.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

TICK = 1.0 / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcTimes:
    pid: int
    ppid: int
    own: int  # utime + stime, clock ticks (all threads)
    reaped: int  # cutime + cstime: children waited for


def parse_stat(text: str) -> ProcTimes:
    """One /proc/<pid>/stat line. The command name (field 2) may hold spaces and parentheses, so
    the fields are counted from its last ')'."""
    pid = int(text.split(" ", 1)[0])
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    ppid = int(rest[1])
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return ProcTimes(pid, ppid, utime + stime, cutime + cstime)


def tree_ticks(procs: Mapping[int, ProcTimes], root: int) -> int:
    """CPU ticks of root and its live descendants, including what they reaped (0 if root is gone)."""
    children: dict[int, list[int]] = {}
    for t in procs.values():
        children.setdefault(t.ppid, []).append(t.pid)
    total, todo, seen = 0, [root], set()
    while todo:
        pid = todo.pop()
        p = procs.get(pid)
        if p is None or pid in seen:
            continue
        seen.add(pid)
        total += p.own + p.reaped
        todo.extend(children.get(pid, ()))
    return total


def snapshot(proc: Path = Path("/proc")) -> dict[int, ProcTimes]:
    out: dict[int, ProcTimes] = {}
    for d in proc.iterdir():
        if not d.name.isdigit():
            continue
        try:
            t = parse_stat((d / "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        out[t.pid] = t
    return out


def trees_seconds(procs: Mapping[int, ProcTimes], roots: Iterable[int]) -> float:
    return sum(tree_ticks(procs, r) for r in roots) * TICK


@dataclass(frozen=True)
class StatLine:
    """One line of /proc/stat (the machine's or one core's), in seconds since boot."""

    busy: float  # everything but idle and iowait (steal included: the core was not ours to use)
    total: float
    steal: float  # taken by the hypervisor while this VM wanted to run
    idle: float  # idle and iowait: nothing to run


def parse_cpu_lines(text: str) -> dict[str, StatLine]:
    """Every `cpu` line of /proc/stat by name ("cpu" is the machine, "cpu0"... each core)."""
    out: dict[str, StatLine] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        name, *rest = line.split()
        # user nice system idle iowait irq softirq steal [guest guest_nice: already inside user/nice]
        fields = [int(x) for x in rest[:8]]
        fields += [0] * (8 - len(fields))  # an old kernel's shorter line
        total = sum(fields)
        idle = fields[3] + fields[4]
        out[name] = StatLine((total - idle) * TICK, total * TICK, fields[7] * TICK, idle * TICK)
    return out


def parse_machine(text: str) -> tuple[float, float]:
    """(busy, total) seconds of all cores since boot: busy is everything but idle and iowait."""
    m = parse_cpu_lines(text)["cpu"]
    return m.busy, m.total


def postmaster_pid(data_dir: Path) -> int:
    """PostgreSQL's postmaster.pid starts with the server's pid."""
    return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


@dataclass(frozen=True)
class Window:
    """CPU seconds used between two snapshots: the system under test, the database server, the whole
    machine (busy and total core-seconds, so that others' load on a shared machine shows)."""

    system: float
    database: float
    machine_busy: float
    machine_total: float
    machine_steal: float  # of machine_busy: the hypervisor's, not this VM's
    db_cores_idle: float  # idle seconds of the cores the database is pinned to (0 without them)


class Meter:
    def __init__(self, system_roots: list[int], db_root: int, db_cores: frozenset[int] | None = None) -> None:
        self.system_roots, self.db_root = system_roots, db_root
        self.db_cores = sorted(db_cores or ())
        self._start = self._read()

    def _read(self) -> tuple[float, ...]:
        procs = snapshot()
        stat = parse_cpu_lines(Path("/proc/stat").read_text())
        m = stat["cpu"]
        db_idle = sum(stat[f"cpu{c}"].idle for c in self.db_cores)
        return (
            trees_seconds(procs, self.system_roots),
            trees_seconds(procs, [self.db_root]),
            m.busy,
            m.total,
            m.steal,
            db_idle,
        )

    def stop(self) -> Window:
        end = self._read()
        d = [b - a for a, b in zip(self._start, end, strict=True)]
        return Window(*d)
