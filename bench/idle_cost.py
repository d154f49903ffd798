"""What idle runners cost the database: statements per second and connections, per idle runner.

    python -m bench.idle_cost [--runners 1,10,40] [--seconds 20] [--via direct,pgbouncer]

N `civic-runner run` processes (queues s3_signer and thumbnails, the Civic OS defaults) on an
empty queue; after they settle, statements are counted from pg_stat_statements over the window
(every statement any of them sends, LISTEN connection included) and connections from
pg_stat_activity. Each count is taken with the insert watcher at several intervals and off, so
the watcher's own price is in the table (--intervals). The count excludes the benchmark's own queries.
With `--via pgbouncer` the runners' DATABASE_URL goes through Debian's PgBouncer in transaction mode
(devenv/pgbouncer.py) and DATABASE_LISTEN_URL is direct; "server connections" are then PgBouncer's plus the
direct LISTEN ones, as PostgreSQL counts them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.common import ROOT, fresh_db, log, machine, runner_env
from devenv.pg import PostgresServer
from devenv.pgbouncer import PgBouncer


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    server: PostgresServer, n: int, seconds: float, watch_interval: float, pooler: PgBouncer | None = None
) -> dict[str, Any]:
    url = fresh_db(server, f"bench_idle_{n}_{int(watch_interval * 1000)}_{'pgb' if pooler else 'direct'}")
    env = {
        **runner_env(url),
        "CIVIC_QUEUES": "s3_signer=20,thumbnails=3",
        "CIVIC_INSERT_WATCH_INTERVAL": str(watch_interval),
        "PGAPPNAME": "civic-idle",
    }
    if pooler is not None:
        env["DATABASE_LISTEN_URL"] = url
        env["DATABASE_URL"] = url.replace(f":{server.port}/", f":{pooler.port}/")
    procs = [subprocess.Popen([sys.executable, "-m", "civic_runner.cli", "run"], env=env) for _ in range(n)]
    try:
        time.sleep(6 + n * 0.5)  # imports, start-up checks, elections
        # pg_stat_statements counts for the whole server; its view lives where the extension is.
        with psycopg.connect(server.url(), autocommit=True) as conn:
            dbid = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (url.rsplit("/", 1)[1],)).fetchone()
            assert dbid is not None
            sql_calls = """SELECT coalesce(sum(calls), 0), coalesce(sum(total_exec_time), 0) FROM pg_stat_statements s
                           JOIN pg_roles r ON r.oid = s.userid
                           WHERE s.dbid = %s AND s.query NOT LIKE %s"""
            marker = "%bench-idle-cost%"
            conn.execute("SELECT pg_stat_statements_reset() /* bench-idle-cost */")
            cpu0 = sum(cpu_seconds(p.pid) for p in procs)
            t0 = time.monotonic()
            time.sleep(seconds)
            row = conn.execute(sql_calls + " /* bench-idle-cost */", (dbid[0], marker)).fetchone()
            elapsed = time.monotonic() - t0
            cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
            conns = conn.execute(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datid = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'""",
                (dbid[0],),
            ).fetchone()
            top = conn.execute(
                """SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 90) FROM pg_stat_statements
                   WHERE dbid = %s AND query NOT LIKE %s ORDER BY calls DESC LIMIT 5 /* bench-idle-cost */""",
                (dbid[0], marker),
            ).fetchall()
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)
    assert row is not None and conns is not None
    qps = float(row[0]) / elapsed
    return {
        "runners": n,
        "via": "pgbouncer" if pooler else "direct",
        "watch_interval_ms": watch_interval * 1000,
        "statements_per_s": round(qps, 1),
        "statements_per_s_per_runner": round(qps / n, 1),
        # the server's own time executing them: ms per second of wall time (10 = 1 % of a core)
        "db_exec_ms_per_s": round(float(row[1]) / elapsed, 2),
        "runner_cpu_percent_total": round(100 * cpu / elapsed, 2),
        "server_connections": int(conns[0]),
        "server_connections_per_runner": round(int(conns[0]) / n, 2),
        "top": [(int(c), str(q)) for c, q in top],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runners", default="1,3,10", help="comma-separated runner counts")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--intervals", default="0.002,0.005,0", help="insert watcher intervals (s) to measure; 0: off")
    ap.add_argument("--via", default="direct", help="direct, pgbouncer or both (comma-separated)")
    args = ap.parse_args()
    server = PostgresServer(
        settings={
            "shared_preload_libraries": "'pg_stat_statements'",
            "pg_stat_statements.track": "all",
            "max_connections": "300",  # 40 direct runners hold 160
        }
    )
    server.start()
    pooler = PgBouncer(server.port, pool_mode="transaction", pool_size=20) if "pgbouncer" in args.via else None
    if pooler is not None:
        pooler.start()
    results = []
    try:
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        for via in args.via.split(","):
            for n in (int(x) for x in args.runners.split(",")):
                for interval in (float(x) for x in args.intervals.split(",")):
                    r = measure(server, n, args.seconds, interval, pooler if via == "pgbouncer" else None)
                    log(json.dumps({k: v for k, v in r.items() if k != "top"}))
                    results.append(r)
    finally:
        if pooler is not None:
            pooler.stop()
        server.destroy()
    out = Path(ROOT / "bench" / "out" / "idle_cost.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(), "results": results}))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
