"""The ceiling: our claim and completion statements driven without Python (pgbench), per variant of the
completion statement, batch size and client count.

    python -m bench.ceiling [--jobs 50000] [--batches 100,1000] [--clients 1,2,4]
                            [--variants shipped,locked] [--inserts burst,vacuumed] [--rounds 2]

Each pgbench client loops over one transaction script: the runner's own claim (`Driver.claim_sql`, the
text the runner sends, with `limit` = the batch size), then the completion of what it claimed with the
variant's statement. Variants (all River-compatible: the same rows end in the same states with the same
columns written):

- `shipped`: `Driver.complete_plain_sql`, a conditional UPDATE of the batch (as River 0.51's
  JobSetStateIfRunningMany);
- `locked`: the statement the runner shipped until 2026-12-02: `FOR UPDATE` of the batch's rows in a CTE,
  then the UPDATE (the lock costs a tuple-lock WAL record and a page write per row).

Per run: a fresh database of one PostgreSQL server with durable defaults; N jobs inserted beforehand
as a system's round meets them (`burst`: a CHECKPOINT, then one INSERT with River's notification;
`vacuumed`: followed by VACUUM ANALYZE, as until 2026-12-03); timed from river_job (first attempted_at
-> last finalized_at) as bench.throughput times the systems; the PostgreSQL server's CPU per 1,000
jobs (bench/cpu.py) and its WAL bytes per job. Rounds interleave the variants. JSON: bench/out/ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from civic_runner.driver import MAX_ATTEMPTED_BY, Driver

from bench import burst, cpu
from bench.common import ROOT, fresh_db, insert_noop, log, machine, start_postgres
from bench.placement import PLACEMENT

DRIVER = Driver("metadata")

LOCKED_COMPLETE_SQL = """
WITH input AS (
  SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::smallint[]) AS t(id, run_attempt)
), locked AS (
  SELECT j.id, (j.state = 'running' AND (t.run_attempt IS NULL OR j.attempt = t.run_attempt)) AS was_running
  FROM input t JOIN "metadata".river_job j ON j.id = t.id
  ORDER BY j.id
  FOR UPDATE OF j
)
UPDATE "metadata".river_job j SET
  state = CASE WHEN l.was_running THEN 'completed' ELSE j.state END,
  finalized_at = CASE WHEN l.was_running THEN now() ELSE j.finalized_at END
FROM locked l WHERE j.id = l.id
RETURNING j.id, j.state::text, l.was_running
"""

VARIANTS = {"shipped": DRIVER.complete_plain_sql, "locked": LOCKED_COMPLETE_SQL}


def pgbench_sql(sql: str) -> str:
    """psycopg's named placeholders as pgbench variables, on one line (pgbench ends an SQL command at the
    first newline that follows a semicolon; one line keeps each statement whole whatever its layout)."""
    text = re.sub(r"%\((\w+)\)s", r":\1", sql)
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def script(variant: str) -> str:
    """One pgbench transaction: claim a batch, complete it. Ids and attempts travel as quoted array literals."""
    claim = pgbench_sql(DRIVER.claim_sql)
    complete = pgbench_sql(VARIANTS[variant])
    return (
        f"WITH claimed AS ({claim}) SELECT quote_literal(coalesce(array_agg(id), '{{}}')::text) AS ids, "
        f"quote_literal(coalesce(array_agg(attempt), '{{}}')::text) AS attempts FROM claimed\n\\gset\n"
        f"{complete};\n"
    )


def wal_lsn(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'").fetchone()
        return int(row[0]) if row else 0


def settle_backends(url: str) -> None:
    """Wait until pgbench's backends are gone and reaped: an exited backend's CPU time reaches the
    postmaster's children's times only when it is reaped, and a zombie's own counters read zero."""
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(200):
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'").fetchone()
            if row is not None and row[0] == 0:
                break
            time.sleep(0.01)
    time.sleep(0.1)


INSERTS = ("burst", "vacuumed")


def prepare_jobs(url: str, n: int, insert: str) -> None:
    """The N jobs the clients work, as a system's round meets them (`burst`: a CHECKPOINT, then one
    INSERT with River's notification, nothing else), or `vacuumed` afterwards (the ceiling until
    2026-12-03): VACUUM sets hint bits and the visibility map and empties the GIN pending lists
    beforehand, which spared the statements 6-8 µs of PostgreSQL CPU per job and ~9 % of their
    WAL that no system's round is spared."""
    if insert == "vacuumed":
        insert_noop(url, n)
        return
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")
    burst.insert_burst(url, n)


def run(url: str, db_pid: int, variant: str, n: int, batch: int, clients: int, insert: str = "burst") -> dict[str, Any]:
    prepare_jobs(url, n, insert)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as f:
        f.write(script(variant))
    Path(f.name).chmod(0o644)
    txns = -(-n // (batch * clients)) + 2  # ceil, and a couple of empty claims at the end
    wal0 = wal_lsn(url)
    meter = cpu.Meter([], db_pid, PLACEMENT.database)
    t0 = time.monotonic()
    variables = [
        *("-D", "queue='default'", "-D", f"limit={batch}", "-D", "client_id='pgbench'"),
        *("-D", f"max_by={MAX_ATTEMPTED_BY}"),
    ]
    out = subprocess.run(
        [
            "pgbench",
            "-n",
            "-c",
            str(clients),
            "-j",
            str(min(clients, 2)),
            "-t",
            str(txns),
            *variables,
            "-f",
            f.name,
            url,
        ],
        preexec_fn=PLACEMENT.preexec(),
        capture_output=True,
        text=True,
    )
    settle_backends(url)
    window = meter.stop()
    wall = time.monotonic() - t0
    wal = wal_lsn(url) - wal0
    Path(f.name).unlink()
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE state = 'completed'),"
            " extract(epoch FROM max(finalized_at) - min(attempted_at)) FROM metadata.river_job"
        ).fetchone()
    assert row is not None
    done, seconds = int(row[0]), float(row[1])
    if done != n:
        raise RuntimeError(f"{variant}: {done} of {n} jobs completed")
    return {
        "jobs_per_s": n / seconds,
        "db_cpu_us_per_job": window.database / n * 1e6,
        "wal_bytes_per_job": wal / n,
        "machine_busy_cores": window.machine_busy / wall,
        **PLACEMENT.shares(window, wall),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=50_000)
    ap.add_argument("--batches", default="100,1000")
    ap.add_argument("--clients", default="1,2,4")
    ap.add_argument("--variants", default="shipped,locked")
    ap.add_argument("--inserts", default="burst", help=f"how the jobs are inserted beforehand: {', '.join(INSERTS)}")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "ceiling.json")
    ap.add_argument("--split-cores", action="store_true", help="PostgreSQL on a core of its own (bench/placement.py)")
    args = ap.parse_args()
    if args.split_cores:
        PLACEMENT.split_cores()
    variants = args.variants.split(",")
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)} (known: {', '.join(VARIANTS)})")
    inserts = args.inserts.split(",")
    unknown = set(inserts) - set(INSERTS)
    if unknown:
        raise SystemExit(f"unknown inserts {sorted(unknown)} (known: {', '.join(INSERTS)})")
    server = start_postgres()
    db_pid = cpu.postmaster_pid(server.data)
    PLACEMENT.pin_database(db_pid)
    log(f"placement: {PLACEMENT.describe()}")
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        for r in range(args.rounds):
            for batch in map(int, args.batches.split(",")):
                for clients in map(int, args.clients.split(",")):
                    for variant in variants:
                        for insert in inserts:
                            url = fresh_db(server, f"ceiling_{variant}_{insert}_{batch}_{clients}_{r}")
                            res = run(url, db_pid, variant, args.jobs, batch, clients, insert)
                            key = f"{variant} {insert} batch={batch} clients={clients}"
                            results.setdefault(key, []).append(res)
                            log(f"{key} (round {r + 1}): " + ", ".join(f"{k} {v:.4g}" for k, v in res.items()))
    finally:
        server.destroy()
    summary = {
        key: {
            **{k: statistics.median(x[k] for x in runs) for k in runs[0]},
            "jobs_per_s_min": min(x["jobs_per_s"] for x in runs),
            "jobs_per_s_max": max(x["jobs_per_s"] for x in runs),
        }
        for key, runs in results.items()
    }
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "jobs": args.jobs,
        "summary": summary,
        "runs": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print("| variant | insert | batch | clients | jobs/s median [min-max] | PostgreSQL CPU µs/job | WAL bytes/job |")  # noqa: T201
    print("|---|---|---|---|---|---|---|")  # noqa: T201
    for key, s in summary.items():
        cells = key.replace("batch=", "").replace("clients=", "").split()
        print(  # noqa: T201
            f"| {' | '.join(cells)} | {s['jobs_per_s']:.0f} [{s['jobs_per_s_min']:.0f}-{s['jobs_per_s_max']:.0f}] |"
            f" {s['db_cpu_us_per_job']:.1f} | {s['wal_bytes_per_job']:.0f} |"
        )


if __name__ == "__main__":
    main()
