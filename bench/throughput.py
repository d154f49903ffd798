"""No-op claim+complete throughput: our runner vs River's Go client (`river bench`), pgqueuer, and the
same SQL driven by pgbench without Python (the ceiling). Burn-down of N pre-inserted jobs each.

    python -m bench.throughput [--jobs 100000] [--only ours,river,pgqueuer,sql]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, count_state, fresh_db, insert_noop, log, machine, runner_env, start_postgres


def bench_ours(url: str, n: int, procs: int, concurrency: int) -> float:
    insert_noop(url, n)
    env = runner_env(url)
    t0 = time.perf_counter()
    runners = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "civic_runner.cli",
                "run",
                "--queues",
                f"default={concurrency}",
                "--exit-when-idle",
                "--idle-exit-after",
                "1",
                "--fetch-poll-interval",
                "0.1",
            ],
            env=env,
        )
        for _ in range(procs)
    ]
    last, last_t = 0, t0
    while count_state(url, "completed") < n:
        time.sleep(0.5)
        done = count_state(url, "completed")
        now = time.perf_counter()
        if now - last_t >= 2:
            log(f"  ours: {done}/{n} completed ({(done - last) / (now - last_t):.0f} jobs/s)")
            last, last_t = done, now
        if all(r.poll() is not None for r in runners) and done < n:
            raise RuntimeError("runners exited before the queue drained")
    for r in runners:
        r.wait(60)
    return n / working_seconds(url)


def working_seconds(url: str) -> float:
    """From the first claim to the last completion, by the database's clock (excludes start-up,
    as `river bench` and the pgqueuer timer do)."""
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT extract(epoch FROM max(finalized_at) - min(attempted_at)) FROM metadata.river_job"
        ).fetchone()
    assert row is not None
    return float(row[0])


def bench_river(url: str, n: int) -> float:
    cli = subprocess.run([str(ROOT / "scripts/river/install-cli.sh")], capture_output=True, text=True, check=True)
    river = cli.stdout.strip().splitlines()[-1]
    out = subprocess.run(
        [str(ROOT / "scripts/river/bench.sh"), url, "--num-total-jobs", str(n)],
        capture_output=True,
        text=True,
        env={**os.environ, "RIVER_CLI": river},
    )
    text = out.stdout + out.stderr
    log("  river: " + " | ".join(text.strip().splitlines()[-3:]))
    rates = re.findall(r"overall job/sec \[\s*([\d.]+)", text)
    if out.returncode != 0 or not rates:
        raise RuntimeError(f"river bench failed:\n{text[-2000:]}")
    return float(rates[-1])


async def _pgqueuer(url: str, n: int, batch: int, concurrency: int) -> float:
    import asyncpg
    from pgqueuer import PgQueuer
    from pgqueuer.db import AsyncpgDriver
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries

    conn = await asyncpg.connect(url)
    driver = AsyncpgDriver(conn)
    q = Queries(driver)
    await q.install()
    for start in range(0, n, 10_000):
        size = min(10_000, n - start)
        await q.enqueue(["noop"] * size, [None] * size, [0] * size)
    pgq = PgQueuer(driver)
    done = 0
    finished = asyncio.Event()

    @pgq.entrypoint("noop", concurrency_limit=concurrency)
    async def noop(job: Job) -> None:
        nonlocal done
        done += 1
        if done >= n:
            finished.set()

    t0 = time.perf_counter()
    task = asyncio.create_task(pgq.run(batch_size=batch))
    await asyncio.wait_for(finished.wait(), timeout=600)
    elapsed = time.perf_counter() - t0
    pgq.shutdown.set()
    await asyncio.wait_for(task, 30)
    await conn.close()
    return n / elapsed


def bench_pgqueuer(url: str, n: int) -> float:
    return asyncio.run(_pgqueuer(url, n, batch=100, concurrency=1000))


CLAIM_COMPLETE_SQL = """
WITH locked AS (
  SELECT id FROM metadata.river_job
  WHERE state = 'available' AND queue = 'default' AND scheduled_at <= now()
  ORDER BY priority, scheduled_at, id LIMIT :batch FOR UPDATE SKIP LOCKED
), claimed AS (
  UPDATE metadata.river_job j SET state = 'running', attempt = j.attempt + 1, attempted_at = now(),
    attempted_by = array_append(j.attempted_by, 'pgbench')
  FROM locked WHERE j.id = locked.id RETURNING j.id
) SELECT quote_literal(coalesce(array_agg(id), '{}')::text) AS ids FROM claimed \\gset
WITH input AS (SELECT unnest(:ids::bigint[]) AS id), locked AS (
  SELECT j.id FROM input t JOIN metadata.river_job j ON j.id = t.id ORDER BY j.id FOR UPDATE OF j
) UPDATE metadata.river_job j SET state = 'completed', finalized_at = now()
  FROM locked l WHERE j.id = l.id AND j.state = 'running';
"""


def bench_sql(url: str, n: int, clients: int = 4, batch: int = 100) -> float:
    """The ceiling: our claim and batched-complete statements, driven by pgbench (C, no Python)."""
    insert_noop(url, n)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(CLAIM_COMPLETE_SQL)
        script = f.name
    os.chmod(script, 0o644)
    txns = n // (batch * clients)
    t0 = time.perf_counter()
    out = subprocess.run(
        ["pgbench", "-n", "-c", str(clients), "-j", "2", "-t", str(txns), "-D", f"batch={batch}", "-f", script, url],
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    done = count_state(url, "completed")
    log(f"  sql: {done} completed by pgbench in {elapsed:.1f}s")
    return done / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--only", default="ours,river,pgqueuer,sql")
    ap.add_argument("--procs", type=int, default=2, help="runner processes (one per core)")
    ap.add_argument("--concurrency", type=int, default=1000, help="workers per runner process")
    ap.add_argument("--repeat", type=int, default=3, help="runs per system; the median is reported")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "throughput.json")
    args = ap.parse_args()
    server = start_postgres()
    runs: dict[str, list[float]] = {}
    names = args.only.split(",")
    try:
        # Interleaved (ours, river, ... then again) so that drift in the machine's load hits all alike.
        for i in range(args.repeat):
            for name in names:
                url = fresh_db(server, f"bench_{name}_{i}")
                log(f"{name} (run {i + 1}/{args.repeat}): burn-down of {args.jobs} no-op jobs")
                if name == "ours":
                    rate = bench_ours(url, args.jobs, args.procs, args.concurrency)
                elif name == "river":
                    rate = bench_river(url, args.jobs)
                elif name == "pgqueuer":
                    rate = bench_pgqueuer(url, args.jobs)
                elif name == "sql":
                    rate = bench_sql(url, args.jobs)
                else:
                    raise SystemExit(f"unknown system {name}")
                runs.setdefault(name, []).append(rate)
                log(f"{name}: {rate:.0f} jobs/s")
    finally:
        server.destroy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "jobs": args.jobs,
        "procs": args.procs,
        "concurrency": args.concurrency,
        "jobs_per_s_median": {k: statistics.median(v) for k, v in runs.items()},
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
