"""The operator's queue-stats query on a river_job of 1 million rows (bar: <= 5 ms).

python -m bench.operator_stats [--rows 1000000] [--available 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import psycopg
from civic_operator.stats import StatsSource, depth_cap

from bench.common import ROOT, fresh_db, log, machine, start_postgres


def fill(url: str, rows: int, available: int, running: int) -> None:
    finished = rows - available - running
    with psycopg.connect(url, autocommit=True) as conn:
        log(f"inserting {finished} completed/discarded, {available} available, {running} running rows")
        conn.execute(
            """INSERT INTO metadata.river_job (kind, args, queue, state, attempt, attempted_at, finalized_at,
                                               scheduled_at, created_at)
               SELECT 'thumbnail_generate', jsonb_build_object('file_id', g), 'thumbnails',
                      CASE WHEN g %% 50 = 0 THEN 'discarded' ELSE 'completed' END::metadata.river_job_state, 1,
                      now() - (g || ' ms')::interval, now() - (g || ' ms')::interval,
                      now() - (g || ' ms')::interval, now() - (g || ' ms')::interval
               FROM generate_series(1, %s::int) g""",
            (finished,),
        )
        conn.execute(
            """INSERT INTO metadata.river_job (kind, args, queue, state, scheduled_at)
               SELECT 'thumbnail_generate', '{}', 'thumbnails', 'available', now() - (g || ' ms')::interval
               FROM generate_series(1, %s::int) g""",
            (available,),
        )
        conn.execute(
            """INSERT INTO metadata.river_job (kind, args, queue, state, attempt, attempted_at)
               SELECT 'thumbnail_generate', '{}', 'thumbnails', 'running', 1, now() FROM generate_series(1, %s::int)""",
            (running,),
        )
        conn.execute("VACUUM ANALYZE metadata.river_job")


async def measure(url: str, n: int, max_replicas: int, target: float, with_rate: bool) -> list[float]:
    src = StatsSource()
    try:
        kw = {"cap": depth_cap(max_replicas, target), "with_rate": with_rate}
        await src.fetch(url, "metadata", ["thumbnails"], 5, **kw)  # connect + warm
        times = []
        for _ in range(n):
            _, seconds = await src.fetch(url, "metadata", ["thumbnails"], 5, **kw)
            times.append(seconds * 1000)
        return times
    finally:
        await src.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--available", type=int, default=20_000)
    ap.add_argument("--running", type=int, default=200)
    ap.add_argument("--samples", type=int, default=300)
    args = ap.parse_args()
    server = start_postgres()
    try:
        url = fresh_db(server, "bench_stats")
        fill(url, args.rows, args.available, args.running)
        results = {}
        for label, mx, target, rate in (
            ("defaults (max 10 x 10)", 10, 10, False),
            ("max 50 x 100", 50, 100, False),
            ("max 50 x 100 + targetDrainSeconds", 50, 100, True),
        ):
            t = sorted(asyncio.run(measure(url, args.samples, mx, target, rate)))
            results[label] = {
                "cap": depth_cap(mx, target),
                "p50_ms": statistics.median(t),
                "p95_ms": t[int(len(t) * 0.95)],
                "p99_ms": t[int(len(t) * 0.99)],
            }
            log(f"{label}: {results[label]}")
        with psycopg.connect(url) as conn:
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    "EXPLAIN (ANALYZE, BUFFERS) SELECT count(*) FROM (SELECT 1 FROM metadata.river_job "
                    "WHERE state = 'available' AND queue = ANY(ARRAY['thumbnails']) LIMIT 1000) a"
                )
            )
    finally:
        server.destroy()
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "rows": args.rows,
        "available": args.available,
        "running": args.running,
        "results": results,
        "available_count_plan": plan,
    }
    out = ROOT / "bench" / "out" / "operator_stats.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
