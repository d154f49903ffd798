"""Runners direct and through PgBouncer (Debian's, transaction mode): no-op burn-down throughput, and
insert -> claimed latency with and without DATABASE_LISTEN_URL.

    python -m bench.pgbouncer [--jobs 20000] [--samples 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from bench import burst, cpu
from bench.common import ROOT, fresh_db, log, machine, runner_env, start_postgres
from devenv.pgbouncer import PgBouncer, version


def pooled(bouncer: PgBouncer, direct: str) -> str:
    return bouncer.url(direct.rsplit("/", 1)[1])


def latencies(direct: str, work_url: str, listen_url: str, samples: int, notify: bool) -> list[float]:
    """Seconds from insert to claim of one job at a time, at random phases of the 1 s poll."""
    env = {**runner_env(work_url), "CIVIC_QUEUES": "default=10"}
    if listen_url:
        env["DATABASE_LISTEN_URL"] = listen_url
    runner = subprocess.Popen([sys.executable, "-m", "civic_runner.cli", "run"], env=env)
    ids: list[int] = []
    try:
        with psycopg.connect(direct, autocommit=True) as conn:
            # Warm-up: one job claimed means the runner is up (on a loaded machine start-up takes seconds).
            conn.execute("INSERT INTO metadata.river_job (kind, args) VALUES ('benchmark', '{}')")
            deadline = time.monotonic() + 60
            while conn.execute("SELECT count(*) FROM metadata.river_job WHERE attempted_at IS NULL").fetchone() != (0,):
                if time.monotonic() > deadline:
                    raise RuntimeError("the runner claimed nothing within 60 s")
                time.sleep(0.1)
            time.sleep(1.0)
            for i in range(samples):
                with conn.transaction():
                    row = conn.execute(
                        "INSERT INTO metadata.river_job (kind, args) VALUES ('benchmark', '{}') RETURNING id"
                    ).fetchone()
                    assert row is not None
                    if notify:
                        conn.execute("SELECT pg_notify('metadata.river_insert', '{\"queue\": \"default\"}')")
                ids.append(int(row[0]))
                time.sleep(0.2 + (i * 0.137) % 0.8)  # spread over the poll's phase
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                row = conn.execute(
                    "SELECT count(*) FROM metadata.river_job WHERE id = ANY(%s) AND attempted_at IS NULL", (ids,)
                ).fetchone()
                if row and row[0] == 0:
                    break
                time.sleep(0.1)
            rows = conn.execute(
                "SELECT extract(epoch FROM attempted_at - created_at) FROM metadata.river_job WHERE id = ANY(%s)",
                (ids,),
            ).fetchall()
    finally:
        runner.terminate()
        runner.wait(30)
    return sorted(float(r[0]) for r in rows if r[0] is not None)


def summary(xs: list[float]) -> dict[str, float]:
    q = statistics.quantiles(xs, n=20)
    return {"n": len(xs), "p50_ms": statistics.median(xs) * 1e3, "p95_ms": q[18] * 1e3, "max_ms": max(xs) * 1e3}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--samples", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3, help="throughput runs per setup; the median is reported")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "pgbouncer.json")
    args = ap.parse_args()
    server = start_postgres()
    bouncer = PgBouncer(server.port, pool_mode="transaction", pool_size=20)
    bouncer.start()
    result: dict[str, object] = {"machine": machine(), "pgbouncer": version(), "jobs": args.jobs}
    ours = burst.ours(args.procs, args.concurrency, None)  # a burst round as bench.throughput runs it
    db_pid = cpu.postmaster_pid(server.data)
    try:
        rates: dict[str, list[float]] = {"direct": [], "pgbouncer": []}
        for i in range(args.repeat):  # alternated: the machine's load changes over minutes
            for name in ("direct", "pgbouncer") if i % 2 == 0 else ("pgbouncer", "direct"):
                direct = fresh_db(server, f"tp_{name}_{i}")
                url = direct if name == "direct" else pooled(bouncer, direct)
                rate = burst.run_round(ours, url, args.jobs, db_pid, settle=1.0)["jobs_per_s"]
                log(f"throughput {name}: {rate:.0f} jobs/s")
                rates[name].append(rate)
        for name, xs in rates.items():
            result[f"throughput_{name}_jobs_per_s"] = {
                "median": round(statistics.median(xs)),
                "runs": [round(x) for x in xs],
            }
        cases = {
            "direct_notify": ("direct", "", True),
            "pgbouncer_listen_url_notify": ("pgbouncer", "direct", True),
            "pgbouncer_listen_url_no_notify_watcher": ("pgbouncer", "direct", False),
            "pgbouncer_no_listen_url_poll": ("pgbouncer", "", True),
        }
        for case, (via, listen, notify) in cases.items():
            direct = fresh_db(server, f"lat_{case}")
            work = direct if via == "direct" else pooled(bouncer, direct)
            s = summary(latencies(direct, work, direct if listen else "", args.samples, notify))
            log(f"latency {case}: " + ", ".join(f"{k}={v:.1f}" for k, v in s.items()))
            result[f"latency_{case}"] = s
    finally:
        bouncer.destroy()
        server.destroy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
