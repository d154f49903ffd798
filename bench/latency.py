"""Insert-to-completed latency at a steady rate (default 100 jobs/s), measured in the database
(finalized_at - created_at, both from PostgreSQL's clock).

Each job is inserted in its own transaction with the insert notification, as Civic OS's triggers
(with our migration) and River's clients do.

    python -m bench.latency [--rate 100] [--seconds 30]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from bench.common import ROOT, fresh_db, log, machine, runner_env, start_postgres


def run(url: str, rate: float, seconds: float) -> dict[str, float]:
    env = runner_env(url)
    runner = subprocess.Popen([sys.executable, "-m", "civic_runner.cli", "run", "--queues", "default=50"], env=env)
    try:
        time.sleep(3)  # let it connect and LISTEN
        n = int(rate * seconds)
        interval = 1.0 / rate
        with psycopg.connect(url, autocommit=True) as conn:
            t_next = time.perf_counter()
            for i in range(n):
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO metadata.river_job (kind, args, queue, max_attempts) "
                        "VALUES ('benchmark', jsonb_build_object('num', %s::int), 'default', 25)",
                        (i,),
                    )
                    conn.execute("SELECT pg_notify('metadata.river_insert', '{\"queue\": \"default\"}')")
                t_next += interval
                delay = t_next - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if i and i % int(rate * 5) == 0:
                    log(f"  inserted {i}/{n}")
            deadline = time.time() + 30
            while time.time() < deadline:
                row = conn.execute("SELECT count(*) FROM metadata.river_job WHERE state <> 'completed'").fetchone()
                if row and row[0] == 0:
                    break
                time.sleep(0.2)
            row = conn.execute(
                """SELECT count(*),
                     percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                       (ORDER BY extract(epoch FROM finalized_at - created_at) * 1000),
                     max(extract(epoch FROM finalized_at - created_at) * 1000),
                     percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP
                       (ORDER BY extract(epoch FROM attempted_at - created_at) * 1000),
                     percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP
                       (ORDER BY extract(epoch FROM finalized_at - attempted_at) * 1000)
                   FROM metadata.river_job WHERE state = 'completed'"""
            ).fetchone()
    finally:
        runner.terminate()
        runner.wait(30)
    assert row is not None
    count, (p50, p95, p99), mx, (claim50, claim99), (done50, done99) = row
    if count != n:
        raise RuntimeError(f"only {count} of {n} jobs completed")
    # The split says which side a slow run is on: insert to claim (notification, wakeup, claim
    # statement) or claim to completed (the run, the completer's batching, its statement).
    return {
        "jobs": count,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": float(mx),
        "to_claim_p50_ms": claim50,
        "to_claim_p99_ms": claim99,
        "claim_to_done_p50_ms": done50,
        "claim_to_done_p99_ms": done99,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "latency.json")
    args = ap.parse_args()
    server = start_postgres()
    try:
        url = fresh_db(server, "bench_latency")
        log(f"latency: {args.rate:.0f} jobs/s for {args.seconds:.0f}s")
        result = run(url, args.rate, args.seconds)
    finally:
        server.destroy()
    report = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "rate": args.rate, **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
