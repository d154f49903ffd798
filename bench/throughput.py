"""No-op claim+complete throughput: our runner against River v0.51.2's Go client, timed the same way.

    python -m bench.throughput [--jobs 100000] [--rounds 5] [--only ours,river-go,river-cli]
                               [--procs 2] [--concurrency 1000] [--log-level LEVEL]
                               [--river-workers 2000] [--river-fetch-cooldown 2ms] [--river-pool 20]

`ours` and `river-go` (bench/river_peer: River's Go client) run burst rounds (bench/burst.py):
started idle on a fresh database, handed N jobs in one insert with River's insert notification,
timed from river_job (first attempted_at -> last finalized_at), with the CPU their processes and
the PostgreSQL server used, each round from a checkpoint. After one unmeasured warm-up round per
system (--warmup jobs), rounds interleave the systems, every other round in reverse order (ours,
river-go, river-cli, river-cli, river-go, ours, ...), so that drift in the machine's load hits all
alike; the report has the median, min and max, the ratio ours / river-go of each round and their
median. Our runner runs at its shipped defaults (log level included) unless --log-level says
otherwise. --split-cores puts PostgreSQL on a core of its own (bench/placement.py).

Kept for continuity, each timed its own way: `river-cli` (River v0.47's `river bench` CLI, its own
"overall job/sec", jobs inserted beforehand), `pgqueuer` and `sql` (our claim and completion
statements driven by pgbench, the ceiling, on N jobs inserted as a system's round gets them),
pgqueuer on N pre-inserted jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import burst, ceiling, cpu
from bench.common import ROOT, fresh_db, log, machine, start_postgres
from bench.placement import PLACEMENT

BURST = ("ours", "river-go")
ALIASES = {"river": "river-cli"}  # the name of `river bench`'s row before River's Go client joined


def bench_river(url: str, n: int) -> float:
    cli = subprocess.run([str(ROOT / "scripts/river/install-cli.sh")], capture_output=True, text=True, check=True)
    river = cli.stdout.strip().splitlines()[-1]
    out = subprocess.run(
        [str(ROOT / "scripts/river/bench.sh"), url, "--num-total-jobs", str(n)],
        capture_output=True,
        text=True,
        env={**os.environ, "RIVER_CLI": river},
        preexec_fn=PLACEMENT.preexec(),
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


def bench_sql(url: str, n: int, db_pid: int) -> dict[str, Any]:
    """The ceiling: our claim and completion statements, driven by pgbench (bench/ceiling.py), at the
    batch size our runner claims under a burst (about 1,000) and one client per runner process."""
    r = ceiling.run(url, db_pid, "shipped", n, batch=1000, clients=2)
    return {**r, "db_cpu_s_per_1k": r["db_cpu_us_per_job"] / 1000}  # in the systems' column


def summarize(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Median, min and max of each figure per system; ours / river-go per round (same index) and their median."""
    out: dict[str, Any] = {}
    for name, rounds in runs.items():
        figures = {k for r in rounds for k, v in r.items() if isinstance(v, (int, float))}
        out[name] = {
            k: {
                "median": statistics.median(vals),
                "min": min(vals),
                "max": max(vals),
            }
            for k in sorted(figures)
            if (vals := [r[k] for r in rounds if isinstance(r.get(k), (int, float))])
        }
    ours, peer = runs.get("ours", []), runs.get("river-go", [])
    ratios = [o["jobs_per_s"] / p["jobs_per_s"] for o, p in zip(ours, peer, strict=False)]
    if ratios:
        out["ratio_ours_river_go"] = {"rounds": ratios, "median": statistics.median(ratios), "min": min(ratios)}
    return out


COLUMNS = (
    "jobs_per_s",
    "cpu_s_per_1k",
    "db_cpu_s_per_1k",
    "db_share",
    "writes_per_1k",
    "others_busy_cores",
    "steal_cores",
    "db_cores_idle",
)


def render(runs: dict[str, list[dict[str, Any]]], summary: dict[str, Any]) -> str:
    """A Markdown table: one row per system and round, then the medians [min-max], then the ratios."""
    lines = ["| system | round | " + " | ".join(COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for name, rounds in runs.items():
        for i, r in enumerate(rounds, 1):
            cells = [f"{r[c]:.4g}" if c in r else "" for c in COLUMNS]
            lines.append(f"| {name} | {i} | " + " | ".join(cells) + " |")
        med = summary[name]
        cells = [
            f"{med[c]['median']:.4g} [{med[c]['min']:.4g}-{med[c]['max']:.4g}]" if c in med else "" for c in COLUMNS
        ]
        lines.append(f"| {name} | median [min-max] | " + " | ".join(cells) + " |")
    ratio = summary.get("ratio_ours_river_go")
    if ratio:
        rounds_text = " / ".join(f"{x:.2f}" for x in ratio["rounds"])
        lines.append(
            f"\nours / river-go per round: {rounds_text}; median {ratio['median']:.2f}, min {ratio['min']:.2f}"
        )
    return "\n".join(lines)


def one_run(
    name: str, url: str, args: argparse.Namespace, db_pid: int, systems: dict[str, burst.System]
) -> dict[str, Any]:
    if name in systems:
        return burst.run_round(systems[name], url, args.jobs, db_pid, args.settle, keep_logs=args.keep_logs)
    if name == "river-cli":
        return {"jobs_per_s": bench_river(url, args.jobs)}
    if name == "pgqueuer":
        return {"jobs_per_s": bench_pgqueuer(url, args.jobs)}
    if name == "sql":
        return bench_sql(url, args.jobs, db_pid)
    raise SystemExit(f"unknown system {name} (ours, river-go, river-cli, pgqueuer, sql)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--only", default="ours,river-go,river-cli")
    ap.add_argument("--rounds", "--repeat", dest="rounds", type=int, default=5, help="interleaved rounds per system")
    ap.add_argument("--procs", type=int, default=2, help="our runner processes (one per core)")
    ap.add_argument("--concurrency", type=int, default=1000, help="workers per runner process (CIVIC_QUEUES)")
    ap.add_argument("--log-level", default=None, help="our runner's LOG_LEVEL (default: as shipped)")
    ap.add_argument("--river-workers", type=int, default=2000, help="River's MaxWorkers")
    ap.add_argument("--river-fetch-cooldown", default="2ms", help="River's FetchCooldown (River's default: 100ms)")
    ap.add_argument("--river-pool", type=int, default=20, help="River's pgxpool MaxConns")
    ap.add_argument("--settle", type=float, default=1.0, help="seconds between a system's start and the insert")
    ap.add_argument("--warmup", type=int, default=20_000, help="jobs of one unmeasured round per system (0: none)")
    ap.add_argument("--keep-logs", action="store_true", help="keep the systems' log files (path in the JSON)")
    ap.add_argument(
        "--split-cores",
        action="store_true",
        help="PostgreSQL on a core of its own, the systems (and pgbench) on the others (bench/placement.py)",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "throughput.json")
    args = ap.parse_args()
    names = [ALIASES.get(n, n) for n in args.only.split(",") if n]
    systems: dict[str, burst.System] = {}
    if "ours" in names:
        systems["ours"] = burst.ours(args.procs, args.concurrency, args.log_level)
    if "river-go" in names:
        systems["river-go"] = burst.river_go(args.river_workers, args.river_fetch_cooldown, args.river_pool)
    if args.split_cores:
        PLACEMENT.split_cores()
    server = start_postgres()
    db_pid = cpu.postmaster_pid(server.data)
    PLACEMENT.pin_database(db_pid)
    log(f"placement: {PLACEMENT.describe()}")
    runs: dict[str, list[dict[str, Any]]] = {}
    try:
        # An unmeasured round of each system first: the first burst after the server starts runs on cold
        # caches (catalog, shared buffers, the page cache of the template), and in the rounds below ours
        # would otherwise always be the one to pay for it (its first round: +30 % database CPU per job).
        for name in names if args.warmup else []:
            url = fresh_db(server, f"bench_{name.replace('-', '_')}_warmup")
            log(f"{name} (warm-up, not counted): {args.warmup} no-op jobs")
            one_run(name, url, argparse.Namespace(**{**vars(args), "jobs": args.warmup}), db_pid, systems)
        for i in range(args.rounds):
            # Every other round in reverse order, so that neither system always runs right after the other.
            for name in names if i % 2 == 0 else names[::-1]:
                url = fresh_db(server, f"bench_{name.replace('-', '_')}_{i}")
                log(f"{name} (round {i + 1}/{args.rounds}): {args.jobs} no-op jobs")
                result = one_run(name, url, args, db_pid, systems)
                runs.setdefault(name, []).append(result)
                log(f"{name}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items() if isinstance(v, float)))
    finally:
        server.destroy()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "jobs": args.jobs,
        "placement": PLACEMENT.describe(),
        "ours": {"procs": args.procs, "concurrency": args.concurrency, "log_level": args.log_level or "shipped"},
        "river_go": {
            "workers": args.river_workers,
            "fetch_cooldown": args.river_fetch_cooldown,
            "pool": args.river_pool,
        },
        "summary": summarize(runs),
        "runs": runs,
    }
    args.out.write_text(json.dumps(report, indent=2))
    print(render(runs, report["summary"]))


if __name__ == "__main__":
    main()
