"""Fault soak: runners work a steady stream of jobs for minutes while random network faults hit every
connection between them and PostgreSQL (a real toxiproxy in the path).

    python -m bench.fault_soak                       # 5 min, 2 runners, 20 jobs/s, a fault every 3-12 s
    python -m bench.fault_soak --minutes 2 --rate 40 --seed 7

Faults, drawn at random: added latency (50-300 ms each way, 5-15 s), `reset_peer` on replies (RST on
every connection that receives data, 0.5-2 s), a cut (every open connection closed at once), a lost
reply (replies dropped, then a cut: statements committed that their client never hears of), and a
partition (every byte dropped both ways, nothing closed, 5-30 s). The jobs record each execution on a
direct connection. At the end, with the faults stopped: lost (not completed), duplicates (executed
more than once), attempts spent (attempt > 1), errors, runner restarts (a process that exited), and
per partition how long /readyz took to turn 503 and, after healing, 200 again and the first completion.
JSON to bench/out/fault_soak.json; the summary goes to bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import psycopg

from bench.common import ROOT, fresh_db, log, machine, runner_env, start_postgres
from devenv.pg import free_port
from devenv.toxiproxy import Proxy, Toxiproxy, bin_dir

OUT = ROOT / "bench" / "out"


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def completed(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM metadata.river_job WHERE state = 'completed'").fetchone()
        return int(row[0]) if row else 0


class Inserter(threading.Thread):
    """`rate` soak jobs per second on the direct connection, in 10 batches a second, until stopped."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.rate, self.stop, self.inserted = url, rate, threading.Event(), 0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            t0, owed = time.monotonic(), 0.0
            while not self.stop.is_set():
                owed = self.rate * (time.monotonic() - t0) - self.inserted
                n = int(owed)
                if n > 0:
                    conn.execute(
                        "INSERT INTO metadata.river_job (kind, args) "
                        "SELECT 'soak', jsonb_build_object('ms', (random() * 50)::int) FROM generate_series(1, %s)",
                        (n,),
                    )
                    conn.execute("SELECT pg_notify('metadata.river_insert', '{\"queue\": \"default\"}')")
                    self.inserted += n
                time.sleep(0.1)


def watch_partition(ports: list[int], proxy: Proxy, url: str, seconds: float) -> dict[str, Any]:
    """Partition for `seconds`; per runner, seconds until /readyz 503, then after healing until 200."""
    proxy.blackhole()
    cut = time.monotonic()
    not_ready: dict[int, float] = {}
    while time.monotonic() - cut < seconds:
        for p in ports:
            if p not in not_ready and readyz(p) == 503:
                not_ready[p] = round(time.monotonic() - cut, 2)
        time.sleep(0.1)
    before = completed(url)
    proxy.heal()
    healed = time.monotonic()
    ready: dict[int, float] = {}
    first_completion = None
    while time.monotonic() - healed < 60 and (len(ready) < len(ports) or first_completion is None):
        for p in ports:
            if p not in ready and readyz(p) == 200:
                ready[p] = round(time.monotonic() - healed, 2)
        if first_completion is None and completed(url) > before:
            first_completion = round(time.monotonic() - healed, 2)
        time.sleep(0.1)
    return {
        "seconds": round(seconds, 1),
        "readyz_503_after": [not_ready.get(p) for p in ports],
        "readyz_200_after_heal": [ready.get(p) for p in ports],
        "first_completion_after_heal": first_completion,
    }


def inject(rng: random.Random, proxy: Proxy, ports: list[int], url: str) -> dict[str, Any]:
    kind = rng.choices(["latency", "reset_peer", "cut", "lost_reply", "partition"], [3, 2, 2, 2, 1])[0]
    fault: dict[str, Any] = {"kind": kind, "at": time.strftime("%H:%M:%S")}
    if kind == "latency":
        ms, secs = rng.randint(50, 300), rng.uniform(5, 15)
        proxy.latency(ms, jitter=ms // 5)
        time.sleep(secs)
        proxy.clear()
        fault.update(ms=ms, seconds=round(secs, 1))
    elif kind == "reset_peer":
        secs = rng.uniform(0.5, 2)
        proxy.add("rst", "reset_peer", "downstream", timeout=0)
        time.sleep(secs)
        proxy.clear()
        fault.update(seconds=round(secs, 1))
    elif kind == "cut":
        proxy.cut()
    elif kind == "lost_reply":
        held = rng.uniform(0.2, 1.5)
        proxy.hold_replies()
        time.sleep(held)
        proxy.cut()
        fault.update(held_seconds=round(held, 2))
    else:
        fault.update(watch_partition(ports, proxy, url, rng.uniform(5, 30)))
    return fault


def verify(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:

        def one(sql: str) -> int:
            row = conn.execute(sql).fetchone()
            return int(row[0]) if row else 0

        return {
            "jobs": one("SELECT count(*) FROM metadata.river_job"),
            "completed": one("SELECT count(*) FROM metadata.river_job WHERE state = 'completed'"),
            "lost": one("SELECT count(*) FROM metadata.river_job WHERE state <> 'completed'"),
            "executions": one("SELECT count(*) FROM soak_runs"),
            "never_executed": one(
                "SELECT count(*) FROM metadata.river_job j "
                "WHERE NOT EXISTS (SELECT 1 FROM soak_runs r WHERE r.job_id = j.id)"
            ),
            "duplicates": one("SELECT count(*) FROM (SELECT job_id FROM soak_runs GROUP BY 1 HAVING count(*) > 1) d"),
            "attempt_above_1": one("SELECT count(*) FROM metadata.river_job WHERE attempt > 1"),
            "with_errors": one(
                "SELECT count(*) FROM metadata.river_job WHERE coalesce(array_length(errors, 1), 0) > 0"
            ),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--runners", type=int, default=2)
    ap.add_argument("--rate", type=float, default=20.0, help="jobs inserted per second")
    ap.add_argument("--concurrency", type=int, default=20, help="workers per runner")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--gap-min", type=float, default=3.0, help="seconds between faults, at least")
    ap.add_argument("--gap-max", type=float, default=12.0, help="seconds between faults, at most")
    ap.add_argument("--drain-timeout", type=float, default=180.0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    out_dir = OUT / "fault_soak"
    out_dir.mkdir(parents=True, exist_ok=True)

    server = start_postgres()
    tp = Toxiproxy(log_path=out_dir / "toxiproxy.log").start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        url = fresh_db(server, "soak")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE soak_runs (job_id bigint, attempt int, pid int, at timestamptz DEFAULT now())")
        proxy = tp.proxy("pg", upstream=f"127.0.0.1:{server.port}")
        ports = [free_port() for _ in range(args.runners)]
        for i, port in enumerate(ports):
            env = {
                **runner_env(proxy.url_for(url)),
                "SOAK_RECORD_URL": url,
                "CIVIC_HTTP_PORT": str(port),
                "CIVIC_QUEUES": f"default={args.concurrency}",
                "CIVIC_CLIENT_ID": f"soak-{i}",
            }
            logf = open(out_dir / f"runner{i}.log", "wb")  # noqa: SIM115 - the child owns it
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "civic_runner.cli", "run"], env=env, stdout=logf, stderr=logf, cwd=ROOT
                )
            )
        deadline = time.monotonic() + 30
        while not all(readyz(p) == 200 for p in ports):
            if time.monotonic() > deadline:
                raise RuntimeError("runners not ready in 30 s")
            time.sleep(0.2)
        inserter = Inserter(url, args.rate)
        inserter.start()
        log(f"soak: {args.minutes} min, {args.runners} runners x {args.concurrency}, {args.rate} jobs/s")
        faults: list[dict[str, Any]] = []
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(rng.uniform(args.gap_min, args.gap_max))
            if time.monotonic() >= end:
                break
            faults.append(inject(rng, proxy, ports, url))
            log(f"fault {len(faults)}: {json.dumps(faults[-1])}")
        inserter.stop.set()
        inserter.join()
        proxy.clear()
        t0 = time.monotonic()
        while completed(url) < inserter.inserted and time.monotonic() - t0 < args.drain_timeout:
            time.sleep(0.5)
        drain = round(time.monotonic() - t0, 1)
        result = verify(url)
        restarts = sum(1 for p in procs if p.poll() is not None)
        parts = [f for f in faults if f["kind"] == "partition"]

        def spread(key: str) -> list[float]:
            vals = [v for f in parts for v in (f[key] if isinstance(f[key], list) else [f[key]]) if v is not None]
            return [min(vals), statistics.median(vals), max(vals)] if vals else []

        summary = {
            "machine": machine(),
            "toxiproxy": bin_dir().parent.name,  # built by go install: its /version says only "git"
            "settings": vars(args),
            "inserted": inserter.inserted,
            **result,
            "runner_exits": restarts,
            "drain_seconds_after_faults": drain,
            "faults": len(faults),
            "faults_by_kind": {
                k: sum(1 for f in faults if f["kind"] == k) for k in sorted({f["kind"] for f in faults})
            },
            "partition_readyz_503_after_min_med_max": spread("readyz_503_after"),
            "partition_readyz_200_after_heal_min_med_max": spread("readyz_200_after_heal"),
            "partition_first_completion_after_heal_min_med_max": spread("first_completion_after_heal"),
            "fault_log": faults,
        }
        (OUT / "fault_soak.json").write_text(json.dumps(summary, indent=2, default=str))
        log(json.dumps({k: v for k, v in summary.items() if k != "fault_log"}, default=str))
        ok = result["lost"] == 0 and result["duplicates"] == 0 and restarts == 0
        return 0 if ok else 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        tp.stop()
        server.destroy()


if __name__ == "__main__":
    sys.exit(main())
