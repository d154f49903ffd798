"""One burst round of the throughput bench, the same for every system that works River's table:

start the system on a fresh database and wait until it is idle and listening; hand it N no-op jobs
in one insert with River's insert notification (as River's clients insert); wait until every job
is finalized; read its rate from river_job (first attempted_at -> last finalized_at: the database's
clock, no start-up) and the CPU that its processes and the PostgreSQL server used meanwhile.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg

from bench import cpu
from bench.common import ROOT, log
from bench.placement import PLACEMENT

QUEUE = "default"
# Seconds between the bench's looks for a drained queue. The look is an index-served EXISTS, yet under a
# burst it walks the dead entries at the front of the fetching index: 1.4-2.6 ms of the database each
# (pg_stat_statements), so 20 a second took up to 5 % of the database's core from the systems' rounds,
# which the SQL ceiling (pgbench, no looks) does not pay. The timer is river_job's, so a later look
# only widens the CPU window by an idle moment.
DRAIN_CHECK = 0.2
PROGRESS_EVERY = 5.0  # seconds between progress lines
# Progress from the table's statistics, not a count(*) of completed rows (60-90 ms of the database
# each): every system updates a job twice, to claim it and to finalize it.
PROGRESS_SQL = "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'metadata.river_job'::regclass"
# Settings a developer's shell may carry that would move our runner off its shipped defaults.
_RUNNER_ENV_PREFIXES = ("CIVIC_",)
_RUNNER_ENV_NAMES = ("LOG_LEVEL", "DB_MAX_CONNS", "RIVER_SCHEMA", "THUMBNAIL_MAX_WORKERS", "DATABASE_URL")


@dataclass
class System:
    """How to start one system under test: its processes, and what says it is started."""

    name: str
    start: Callable[[str, Path], list[subprocess.Popen[bytes]]]  # (database url, log dir) -> processes
    ready: Callable[[Path], bool] = lambda logs: True  # extra readiness check on its log dir
    metrics_ports: dict[int, int] = field(default_factory=dict)  # pid -> port of its /metrics, if any


class Monitor:
    """The bench's own connection to the round's database (reads, and the CHECKPOINT before a round)."""

    def __init__(self, url: str) -> None:
        self.conn = psycopg.connect(url, autocommit=True)

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(sql, params).fetchone()
        assert row is not None
        return row[0] if len(row) == 1 else row

    def close(self) -> None:
        self.conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ours_env(url: str, concurrency: int, log_level: str | None) -> dict[str, str]:
    """Our runner as a user deploys it: shipped defaults (log level included) unless log_level is
    given; only the database, the no-op kind, its queue and a free metrics port are set."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_RUNNER_ENV_PREFIXES) and k not in _RUNNER_ENV_NAMES}
    env.update(
        {
            "DATABASE_URL": url,
            "CIVIC_KINDS_MODULES": "bench.kinds",
            "CIVIC_QUEUES": f"{QUEUE}={concurrency}",
            "PYTHONPATH": str(ROOT),
        }
    )
    if log_level:
        env["LOG_LEVEL"] = log_level
    return env


def ours(procs: int, concurrency: int, log_level: str | None) -> System:
    def start(url: str, logs: Path) -> list[subprocess.Popen[bytes]]:
        out = []
        system.metrics_ports.clear()
        for i in range(procs):
            port = free_port()  # each pod has its own; here they share a host
            env = {**ours_env(url, concurrency, log_level), "CIVIC_HTTP_PORT": str(port)}
            # Logs go to a file, as a container runtime writes them for `kubectl logs`.
            with open(logs / f"ours-{i}.log", "wb") as f:
                cmd = [sys.executable, "-m", "civic_runner.cli", "run"]
                out.append(
                    subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, preexec_fn=PLACEMENT.preexec())
                )
            system.metrics_ports[out[-1].pid] = port
        return out

    system = System("ours", start)
    return system


def river_peer_binary() -> str:
    out = subprocess.run(
        [str(ROOT / "bench/river_peer/build.sh")], capture_output=True, text=True, check=False, timeout=900
    )
    if out.returncode != 0:
        raise RuntimeError(f"bench/river_peer/build.sh failed:\n{out.stderr[-2000:]}")
    return out.stdout.strip().splitlines()[-1]


def river_go(workers: int, fetch_cooldown: str, pool: int) -> System:
    binary = river_peer_binary()

    def start(url: str, logs: Path) -> list[subprocess.Popen[bytes]]:
        cmd = [binary, "--database-url", url, "--schema", "metadata", "--queue", QUEUE, "--workers", str(workers)]
        cmd += ["--fetch-cooldown", fetch_cooldown, "--pool", str(pool)]
        with open(logs / "river-go.log", "wb") as f:
            return [subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, preexec_fn=PLACEMENT.preexec())]

    def ready(logs: Path) -> bool:
        return "ready" in (logs / "river-go.log").read_text(errors="replace").split()

    return System("river-go", start, ready)


def wait_started(mon: Monitor, system: System, procs: list[subprocess.Popen[bytes]], logs: Path) -> None:
    """Started = the system's own signal, its queue registered in river_queue and a leader elected
    (both systems do both at start-up, right after their first connections)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{system.name} exited during start-up; see {logs}")
        if system.ready(logs) and mon.one(
            "SELECT EXISTS (SELECT 1 FROM metadata.river_queue WHERE name = %s)"
            " AND EXISTS (SELECT 1 FROM metadata.river_leader)",
            (QUEUE,),
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{system.name} did not start within 120 s; see {logs}")


def insert_burst(url: str, n: int) -> datetime:
    """N jobs in one INSERT, with River's insert notification in the same transaction; the time
    (database clock) just before its commit."""
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(
                "INSERT INTO metadata.river_job (kind, args, queue, max_attempts) "
                "SELECT 'benchmark', jsonb_build_object('num', g), %s, 25 FROM generate_series(1, %s::int) g",
                (QUEUE, n),
            )
            row = conn.execute(
                "SELECT clock_timestamp() FROM pg_notify('metadata.river_insert', %s)", (f'{{"queue": "{QUEUE}"}}',)
            ).fetchone()
        assert row is not None
        return row[0]  # type: ignore[no-any-return]


def checkpoints(mon: Monitor) -> int:
    """Checkpoints the server has started, timed or requested (PostgreSQL 15-16: pg_stat_bgwriter)."""
    return int(mon.one("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter"))


def next_xid(mon: Monitor) -> int:
    """The next transaction id the server will assign (reading it assigns none). Only transactions
    that write get one, so the difference over a window counts the systems' writing round trips
    (claims, completion batches, leader and queue upkeep; the bench's own reads take none)."""
    return int(mon.one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"))


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_drained(
    mon: Monitor, name: str, procs: list[subprocess.Popen[bytes]], n: int, logs: Path, timeout: float
) -> None:
    t0 = said = time.monotonic()
    while mon.one(
        "SELECT EXISTS (SELECT 1 FROM metadata.river_job WHERE state IN ('available', 'running') AND queue = %s)",
        (QUEUE,),
    ):
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"{name}: queue not drained after {timeout} s")
        if any(p.poll() is not None for p in procs):
            raise RuntimeError(f"{name} exited before the queue drained; see {logs}")
        if time.monotonic() - said >= PROGRESS_EVERY:
            said = time.monotonic()
            log(f"  {name}: about {min(int(mon.one(PROGRESS_SQL)) // 2, n)}/{n} finished")
        time.sleep(DRAIN_CHECK)


def timing(mon: Monitor, name: str, n: int, committed: datetime, logs: Path) -> tuple[float, float]:
    """(seconds from the first claim to the last completion, seconds from the insert to the first
    claim), by the database's clock; every job must have completed."""
    done, seconds, wake = mon.one(
        "SELECT count(*) FILTER (WHERE state = 'completed'),"
        " extract(epoch FROM max(finalized_at) - min(attempted_at)),"
        " extract(epoch FROM min(attempted_at) - %s) FROM metadata.river_job",
        (committed,),
    )
    if done != n:
        raise RuntimeError(f"{name}: {done} of {n} jobs completed; see {logs}")
    return float(seconds), float(wake)


def run_round(
    system: System, url: str, n: int, db_pid: int, settle: float, timeout: float = 900, keep_logs: bool = False
) -> dict[str, Any]:
    logs = Path(tempfile.mkdtemp(prefix=f"civic-bench-{system.name}-"))
    mon = Monitor(url)
    procs = system.start(url, logs)
    try:
        wait_started(mon, system, procs, logs)
        time.sleep(settle)  # every process past its first claim attempt and LISTENing
        # Every round starts from a checkpoint. A round writes ~200 MB of WAL: without this, whichever round
        # crossed max_wal_size paid for a checkpoint the earlier ones had made due, and the full-page images
        # after it (one system's round 20-30 % slower than its neighbours, whatever the system).
        mon.conn.execute("CHECKPOINT")
        checkpoints0 = checkpoints(mon)
        committed = insert_burst(url, n)
        meter = cpu.Meter([p.pid for p in procs], db_pid, PLACEMENT.database)
        xid0 = next_xid(mon)
        t0 = time.monotonic()
        wait_drained(mon, system.name, procs, n, logs, timeout)
        window = meter.stop()
        writes = next_xid(mon) - xid0
        during = checkpoints(mon) - checkpoints0
        wall = time.monotonic() - t0
    finally:
        stop(procs)
    seconds, wake = timing(mon, system.name, n, committed, logs)
    mon.close()
    log_bytes = sum(f.stat().st_size for f in logs.iterdir())
    if not keep_logs:  # at INFO ours writes ~240 bytes per job: 24 MB a round
        shutil.rmtree(logs)
    return {
        "jobs_per_s": n / seconds,
        "seconds": seconds,
        "wake_ms": wake * 1000,  # the insert's last statement -> first claim (commit + notify + wake-up)
        "cpu_s_per_1k": window.system / n * 1000,
        "db_cpu_s_per_1k": window.database / n * 1000,
        "db_share": window.database / (window.database + window.system) if window.system + window.database else 0.0,
        "machine_busy_cores": window.machine_busy / wall,
        "others_busy_cores": max(window.machine_busy - window.system - window.database, 0.0) / wall,
        **PLACEMENT.shares(window, wall),
        "writes_per_1k": writes / n * 1000,
        "checkpoints": during,  # started during the round (0 expected)
        "log_bytes_per_job": log_bytes / n,
        "loadavg": os.getloadavg()[0],
        **({"logs": str(logs)} if keep_logs else {}),
    }
