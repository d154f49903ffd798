"""Insert-to-completed latency at a steady rate (default 100 jobs/s), measured in the database
(finalized_at - created_at, both from PostgreSQL's clock).

Each job is inserted in its own transaction with the insert notification, as Civic OS's triggers
(with our migration) and River's clients do: BEGIN, INSERT, NOTIFY, COMMIT, four round trips inside
the timer, since created_at is the transaction's start. `--insert statement` sends one statement
instead (the INSERT and its NOTIFY in one implicit transaction), which leaves the inserter's own
round trips out.

Each round is preceded by the machine's wake-up probe (bench/wake.py). `--baseline REV[,REV...]` runs the
runner of other commits (exported with `git archive`) in rounds interleaved with this tree's, so a
latency regression is seen against the same minutes of the same VM:

    python -m bench.latency [--rate 100] [--seconds 30]
    python -m bench.latency --seconds 20 --rounds 4 --baseline 9337464
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import wake
from bench.common import ROOT, fresh_db, log, machine, runner_env, start_postgres

BASELINES = Path.home() / ".cache" / "civic-workers" / "bench-baseline"

INSERTS = {
    "transaction": None,  # BEGIN / INSERT / NOTIFY / COMMIT, below
    "statement": (
        "WITH j AS (INSERT INTO metadata.river_job (kind, args, queue, max_attempts)"
        " VALUES ('benchmark', jsonb_build_object('num', %s::int), 'default', 25) RETURNING id)"
        " SELECT pg_notify('metadata.river_insert', '{\"queue\": \"default\"}') FROM j"
    ),
}


def baseline_source(rev: str) -> Path:
    """The job runner's source at rev, exported once into the cache (keyed by the full commit id)."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    dest = BASELINES / sha
    if not (dest / "job-runner" / "src" / "civic_runner").is_dir():
        tar = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha, "job-runner/src"], capture_output=True, check=True
        )
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as t:
            t.extractall(dest, filter="data")
    return dest / "job-runner" / "src"


def run(
    url: str, rate: float, seconds: float, source: Path | None = None, insert: str = "transaction"
) -> dict[str, float]:
    env = runner_env(url)
    if source is not None:  # another commit's runner; the no-op kind still comes from this tree
        env["PYTHONPATH"] = f"{source}:{ROOT}"
    statement = INSERTS[insert]
    runner = subprocess.Popen([sys.executable, "-m", "civic_runner.cli", "run", "--queues", "default=50"], env=env)
    try:
        time.sleep(3)  # let it connect and LISTEN
        n = int(rate * seconds)
        interval = 1.0 / rate
        with psycopg.connect(url, autocommit=True) as conn:
            t_next = time.perf_counter()
            for i in range(n):
                if statement is not None:
                    conn.execute(statement, (i,))
                else:
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


def summarize(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per runner (this tree, or the baseline commit): the median of each round's p50 and p99."""
    out: dict[str, dict[str, float]] = {}
    for code in dict.fromkeys(r["code"] for r in rounds):
        mine = [r for r in rounds if r["code"] == code]
        out[code] = {
            "rounds": len(mine),
            "median_p50_ms": statistics.median(r["p50_ms"] for r in mine),
            "median_p99_ms": statistics.median(r["p99_ms"] for r in mine),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--rounds", type=int, default=1, help="rounds per runner, interleaved with the baseline's")
    ap.add_argument("--baseline", metavar="REV[,REV...]", help="also run these commits' runners, interleaved")
    ap.add_argument("--insert", choices=sorted(INSERTS), default="transaction", help="how each job is inserted")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "latency.json")
    args = ap.parse_args()
    codes: list[tuple[str, Path | None]] = [("tree", None)]
    for rev in filter(None, (args.baseline or "").split(",")):
        codes.append((rev, baseline_source(rev)))
    server = start_postgres()
    rounds: list[dict[str, Any]] = []
    try:
        for i in range(args.rounds):
            for code, source in codes if i % 2 == 0 else codes[::-1]:
                probe = wake.probe()
                url = fresh_db(server, f"bench_latency_{i}_{len(rounds)}")
                log(f"latency ({code}, round {i + 1}/{args.rounds}): {args.rate:.0f} jobs/s for {args.seconds:.0f}s")
                result = run(url, args.rate, args.seconds, source, args.insert)
                rounds.append({"code": code, **result, **{f"wake_{k}": v for k, v in probe.items()}})
                log(
                    f"  {code}: p50 {result['p50_ms']:.2f} p99 {result['p99_ms']:.2f} ms"
                    f" (insert->claim {result['to_claim_p50_ms']:.2f}/{result['to_claim_p99_ms']:.2f},"
                    f" claim->completed {result['claim_to_done_p50_ms']:.2f}/{result['claim_to_done_p99_ms']:.2f});"
                    f" wake-up p50 {probe['p50_us']:.0f} p99 {probe['p99_us']:.0f} us"
                )
    finally:
        server.destroy()
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": machine(),
        "rate": args.rate,
        "insert": args.insert,
        "summary": summarize(rounds),
        "rounds": rounds,
    }
    if len(rounds) == 1:
        report.update(rounds[0])  # the one-round form the rows in bench/RESULTS.md were read from
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report["summary"], indent=2))


if __name__ == "__main__":
    main()
