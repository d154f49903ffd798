"""Presign latency: a file_upload_requests insert (as request_upload_url does it) until its row says
`completed` with a URL, through `civic-runner run` with the pipeline's kinds, at a steady rate.

    python -m bench.presign [--rate 50] [--seconds 20] [--workers 20] [--schema project|civic-os]

--schema civic-os runs on the Civic OS v0.70 fixture (tests/fixtures/civic_os_v070): requests are made
with its request_upload_url RPC as the frontend makes them through PostgREST, and its triggers send
no NOTIFY. Each round is measured with the insert watcher on (the default) and, as the control,
off (the runner then finds jobs by its 1 s poll, as Civic OS's Go worker does).

Measured in the database, on PostgreSQL's clock: a bench-only trigger stamps clock_timestamp() when
a request turns completed; latency = that - created_at (the insert's transaction time). The river
job's own finalized_at - created_at is reported beside it. The frontend polls every 500 ms, so what
a person waits is this latency rounded up to the next 500 ms tick.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

from bench.common import ROOT, fresh_db, log, machine, start_postgres

STAMP = """
CREATE TABLE bench_presign_done (id uuid PRIMARY KEY, done_at timestamptz NOT NULL);
CREATE FUNCTION bench_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.status = 'completed' AND OLD.status IS DISTINCT FROM 'completed' THEN
    INSERT INTO bench_presign_done VALUES (NEW.id, clock_timestamp());
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER bench_stamp AFTER UPDATE ON metadata.file_upload_requests FOR EACH ROW EXECUTE FUNCTION bench_stamp();
"""


def table_insert(url: str) -> Callable[[int], None]:
    """request_upload_url's effect, written directly (the project schema has no RPCs)."""
    conn = psycopg.connect(url, autocommit=True)

    def insert(i: int) -> None:
        conn.execute(
            """INSERT INTO metadata.file_upload_requests (entity_type, entity_id, file_name, file_type)
               VALUES ('issues', %s, %s, 'image/jpeg')""",
            (str(i), f"IMG_{i:05d}.JPG"),
        )

    return insert


def rpc_insert(url: str) -> Callable[[int], None]:
    """POST /rpc/request_upload_url as PostgREST runs it: on a pooled (kept) connection as
    authenticator, one transaction per request with SET LOCAL ROLE authenticated and the JWT claims."""
    from devenv import civic_os

    user = civic_os.create_user(url)
    claims = json.dumps(civic_os.claims_for(user))
    conn = psycopg.connect(civic_os.as_user(url, "authenticator"))

    def insert(i: int) -> None:
        with conn.transaction():
            conn.execute("SET LOCAL ROLE authenticated")
            conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))
            conn.execute(
                "SELECT public.request_upload_url(p_entity_type => 'issues', p_entity_id => %s, "
                "p_file_name => %s, p_file_type => 'image/jpeg')",
                (str(i), f"IMG_{i:05d}.JPG"),
            )

    return insert


def run(
    url: str, rate: float, seconds: float, workers: int, insert: Callable[[int], None], watch: bool = True
) -> dict[str, float]:
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "CIVIC_KINDS_MODULES": "civic_runner.pipeline",
        "CIVIC_QUEUES": f"s3_signer={workers}",
        "PYTHONPATH": str(ROOT),
        "LOG_LEVEL": "WARNING",
        "CIVIC_HTTP_PORT": "0",
        # Presigning is local HMAC work: no request reaches this endpoint.
        "S3_ENDPOINT": "http://127.0.0.1:9",
        "S3_ACCESS_KEY_ID": "bench",
        "S3_SECRET_ACCESS_KEY": "bench-secret",
        "CIVIC_INSERT_WATCH_INTERVAL": os.environ.get("CIVIC_INSERT_WATCH_INTERVAL", "0.002") if watch else "0",
    }
    runner = subprocess.Popen([sys.executable, "-m", "civic_runner.cli", "run"], env=env)
    try:
        time.sleep(3)  # connect and LISTEN
        n = int(rate * seconds)
        interval = 1.0 / rate
        with psycopg.connect(url, autocommit=True) as conn:
            t_next = time.perf_counter()
            for i in range(n):
                insert(i)
                t_next += interval
                delay = t_next - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            deadline = time.time() + 30
            while time.time() < deadline:
                row = conn.execute("SELECT count(*) FROM bench_presign_done").fetchone()
                if row and row[0] >= n:
                    break
                time.sleep(0.2)
            stats = conn.execute(
                """SELECT count(*),
                     percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP
                       (ORDER BY extract(epoch FROM d.done_at - r.created_at) * 1000),
                     max(extract(epoch FROM d.done_at - r.created_at) * 1000)
                   FROM metadata.file_upload_requests r JOIN bench_presign_done d USING (id)"""
            ).fetchone()
            job = conn.execute(
                """SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP
                       (ORDER BY extract(epoch FROM finalized_at - created_at) * 1000)
                   FROM metadata.river_job WHERE kind = 's3_presign' AND state = 'completed'"""
            ).fetchone()
            bad = conn.execute(
                """SELECT count(*) FROM metadata.file_upload_requests
                   WHERE status <> 'completed' OR presigned_url IS NULL"""
            ).fetchone()
    finally:
        runner.terminate()
        runner.wait(30)
    assert stats is not None and job is not None and bad is not None
    count, (p50, p95, p99), mx = stats
    if count != n or bad[0]:
        raise RuntimeError(f"only {count} of {n} requests completed ({bad[0]} not completed)")
    return {
        "requests": count,
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": float(mx),
        "job_finalized_p50_ms": job[0][0],
        "job_finalized_p99_ms": job[0][1],
    }


def presign_cost_us() -> float:
    """The irreducible work: one SigV4 presigned PUT with boto3 (local HMAC), median of 2000."""
    sys.path.insert(0, str(ROOT / "job-runner" / "src"))
    from civic_runner.pipeline.config import S3Settings
    from civic_runner.pipeline.storage import Storage

    storage = Storage(S3Settings(endpoint="http://127.0.0.1:9", access_key_id="k", secret_access_key="s"))
    times = []
    for i in range(2000):
        t0 = time.perf_counter()
        storage.presign("put_object", "civic-os-files", f"issues/1/{i}/original.jpg", expires=900, acl="public-read")
        times.append((time.perf_counter() - t0) * 1e6)
    return sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=50.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=20, help="s3_signer concurrency (Civic OS's Go worker: 20)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--schema", choices=["project", "civic-os"], default="project")
    args = ap.parse_args()
    if args.schema == "civic-os":
        return civic_os_main(args)
    server = start_postgres()
    try:
        results: list[dict[str, float]] = []
        peers: list[dict[str, float]] = []
        for rnd in range(args.rounds):
            url = server.create_database(f"bench_presign_{rnd}")
            with psycopg.connect(url, autocommit=True) as conn:
                from civic_runner.migrate import Migrator

                Migrator(conn, "metadata").up(civic=True)
                conn.execute(STAMP)
            log(f"round {rnd + 1}/{args.rounds}: {args.rate:g} requests/s for {args.seconds:g} s")
            r = run(url, args.rate, args.seconds, args.workers, table_insert(url))
            log(f"  {json.dumps({k: round(v, 2) for k, v in r.items()})}")
            results.append(r)
            # The peer, interleaved: a no-op job at the same rate through the same runner (bench.latency).
            from bench.latency import run as run_noop

            noop = run_noop(fresh_db(server, f"bench_presign_noop_{rnd}"), args.rate, args.seconds)
            log(f"  no-op peer: {json.dumps({k: round(v, 2) for k, v in noop.items()})}")
            peers.append(noop)
    finally:
        server.destroy()
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "rate": args.rate,
        "seconds": args.seconds,
        "workers": args.workers,
        "rounds": results,
        "median": {k: sorted(r[k] for r in results)[len(results) // 2] for k in results[0]},
        "noop_peer_rounds": peers,
        "noop_peer_median": {k: sorted(r[k] for r in peers)[len(peers) // 2] for k in peers[0]},
        "boto3_presign_us": presign_cost_us(),
    }
    out = Path(ROOT / "bench" / "out" / "presign.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: summary[k] for k in ("median", "noop_peer_median", "boto3_presign_us")}, indent=2))


def civic_os_main(args: argparse.Namespace) -> None:
    """Civic OS's own triggers (no NOTIFY): the insert watcher on, and off as the control, interleaved."""
    from devenv import civic_os

    server = start_postgres()
    rounds: dict[str, list[dict[str, float]]] = {"watcher": [], "poll_only_control": []}
    try:
        for rnd in range(args.rounds):
            for label, watch in (("watcher", True), ("poll_only_control", False)):
                url = server.create_database(f"bench_presign_civic_{label}_{rnd}")
                civic_os.install(url)
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(STAMP)
                log(f"round {rnd + 1}/{args.rounds} {label}: {args.rate:g} requests/s for {args.seconds:g} s")
                r = run(url, args.rate, args.seconds, args.workers, rpc_insert(url), watch=watch)
                log(f"  {json.dumps({k: round(v, 2) for k, v in r.items()})}")
                rounds[label].append(r)
    finally:
        server.destroy()
    summary = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "schema": "Civic OS v0.70 fixture",
        "rate": args.rate,
        "seconds": args.seconds,
        "workers": args.workers,
        "rounds": rounds,
        "median": {label: {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in rs[0]} for label, rs in rounds.items()},
    }
    out = Path(ROOT / "bench" / "out" / "presign-civic-os.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary["median"], indent=2))


if __name__ == "__main__":
    main()
