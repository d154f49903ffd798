"""The operator at fleet scale: N CivicWorkerPools on the local control plane with kwok's fake nodes (fake
pods, no runner processes), queue depth driven synthetically in PostgreSQL. Measured per N:

- decision latency: from the commit of a new depth (with River's insert notification) to each pool's
  spec.replicas reaching the replicas that depth asks for, p50/p99/max per round;
- API requests the operator makes (the API server's audit log, filtered to its ServiceAccount): per second
  while idle, and per decision in a round;
- the operator process's CPU (utime + stime) and RSS, and the database transactions it causes.

    python -m bench.fleet_scale [--pools 10,100,200] [--rounds 4] [--max-replicas 20] [--idle-seconds 30] [--profile]

--profile samples the operator with py-spy during the rounds (not the start-up or the idle period) and leaves
the samples in bench/out/fleet/profile-<N>.txt (collapsed stacks, one line per stack with its sample count; the
subprocess and idle threads included, so the busy ones are to be read by their frames).

Pools scale in one step (scaleUp.pods = maxReplicas over a 1 s period, no scale-down window, cooldown 0) so
the latency is the operator's and not the policy's rate limits (a pool held at 18 by the step limit would then
stay there for a target of 19: within the 10 % tolerance). A dedicated cluster `civic-fleet` (4 fake nodes with room
for 1,000 pods each, audit log on) is created on first use and kept (`--delete-cluster` deletes it); the namespace
`fleet` is recreated per N. Each round starts when every Deployment runs what it asks (`--back-to-back`: 2 s after
the previous round's last decision, with its pods still being created and deleted).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import psycopg
import requests
import yaml
from civic_operator import kube
from prometheus_client.parser import text_string_to_metric_families

from bench.common import ROOT, fresh_db, log, machine, start_postgres
from devenv import processes
from devenv.clusters import LocalCluster
from devenv.controlplane import LocalControlPlane
from devenv.pg import free_port

NAMESPACE = "fleet"
CLUSTER = "civic-fleet"
AUDIT_POLICY = ROOT / "bench" / "fleet" / "audit-policy.yaml"
TARGET_PER_REPLICA = 10
NODE_PODS = 1000  # per fake node
GROUP, VERSION, PLURAL = "workers.civic-os.org", "v1alpha1", "civicworkerpools"


class FleetCluster(LocalCluster):
    """The local control plane without the real node: every pod is a kwok fake."""

    real_node = None

    def __init__(self) -> None:
        os.environ["CIVIC_KUBE_AUDIT_POLICY"] = str(AUDIT_POLICY)
        self.cp = LocalControlPlane(name=CLUSTER, nodes=4)

    def up(self, test_image: bool = False) -> None:
        self.cp.up()
        # kwok's node template allows 110 pods a node: 440 on 4 nodes, fewer than a 100-pool round asks for
        # (~1,000). The rest would stay Pending and the scheduler retry them all the time, a load a real
        # cluster sized for its fleet does not have. Room for 200 pools at 20 replicas each:
        pods = {"pods": str(NODE_PODS)}
        for name in self.cp.kubectl("get", "nodes", "-l", "type=kwok", "-o", "name").split():
            self.cp.kubectl(
                "patch", name, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"capacity": pods, "allocatable": pods}}),
            )  # fmt: skip

    @property
    def audit_log(self) -> Path:
        return self.cp.kubeconfig.parent / "logs" / "audit.log"


def pool_manifest(index: int, max_replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "CivicWorkerPool",
        "metadata": {"name": f"pool-{index:03d}", "namespace": NAMESPACE},
        "spec": {
            "queues": [f"q{index:03d}"],
            "concurrency": 1,
            "image": "civic-runner:dev",
            "database": {"secretRef": {"name": "civic-db"}},
            "autoscaling": {
                "minReplicas": 0,
                "maxReplicas": max_replicas,
                "targetPerReplica": TARGET_PER_REPLICA,
                "cooldownSeconds": 0,
                "scaleUp": {"pods": max_replicas, "periodSeconds": 1},
                "scaleDown": {"stabilizationWindowSeconds": 0, "pods": max_replicas},
            },
        },
    }


def next_targets(rng: random.Random, previous: list[int], max_replicas: int) -> list[int]:
    """A new replica count per pool, each far enough from the last (> the 10 % tolerance) to be a decision."""
    out = []
    for prev in previous:
        choices = [r for r in range(max_replicas + 1) if (prev == 0 and r > 0) or (prev and abs(r / prev - 1) > 0.15)]
        out.append(rng.choice(choices))
    return out


def set_depths(url: str, targets: list[int]) -> float:
    """Replace every queue's jobs with targets[i] x TARGET_PER_REPLICA available ones, in one transaction that
    also sends River's insert notification per queue; returns the commit's wall time."""
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM metadata.river_job")
        conn.execute(
            """INSERT INTO metadata.river_job (kind, args, queue, max_attempts)
               SELECT 'benchmark', '{}'::jsonb, format('q%%s', lpad((i - 1)::text, 3, '0')), 25
               FROM unnest(%s::int[]) WITH ORDINALITY AS t(n, i), generate_series(1, n)""",
            ([t * TARGET_PER_REPLICA for t in targets],),
        )
        for i in range(len(targets)):
            conn.execute(
                "SELECT pg_notify('metadata.river_insert', json_build_object('queue', %s::text)::text)",
                (f"q{i:03d}",),
            )
        conn.commit()
        return time.time()


class ReplicaWatch:
    """Every spec.replicas each pool has had and when (a watch, so the measurement does not poll the API)."""

    def __init__(self, kubeconfig: Path) -> None:
        self.seen: dict[str, list[tuple[float, int]]] = {}
        self.evaluated: set[str] = set()
        self._lock = threading.Lock()
        client = kubernetes.config.new_client_from_config(str(kubeconfig))
        self._api = kubernetes.client.CustomObjectsApi(client)
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                self._stream()
            except kubernetes.client.ApiException as exc:  # e.g. 504 "too large resource version": list again
                log(f"  (watch restarted: {exc.status} {exc.reason})")
                time.sleep(0.5)

    def _stream(self) -> None:
        watch = kubernetes.watch.Watch()
        for event in watch.stream(
            self._api.list_namespaced_custom_object, GROUP, VERSION, NAMESPACE, PLURAL, timeout_seconds=60
        ):
            obj, now = event["object"], time.time()
            name = obj["metadata"]["name"]
            with self._lock:
                history = self.seen.setdefault(name, [])
                replicas = int((obj.get("spec") or {}).get("replicas") or 0)
                if not history or history[-1][1] != replicas:
                    history.append((now, replicas))
                if (obj.get("status") or {}).get("lastEvaluationTime"):
                    self.evaluated.add(name)
            if self._stop:
                return

    def reached(self, name: str, replicas: int, since: float) -> float | None:
        with self._lock:
            for at, value in self.seen.get(name, []):
                if at >= since and value == replicas:
                    return at
        return None

    def stop(self) -> None:
        self._stop = True


class ProcessMeter:
    """CPU seconds and RSS of one process from /proc (the operator is a single Python process)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick

    def rss_mb(self, key: str = "VmRSS") -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
        return 0.0


def audit_requests(path: Path, start: float, end: float) -> dict[str, int]:
    """The operator's completed requests received in [start, end), by verb (watches counted when they start)."""
    counts: dict[str, int] = {}
    with path.open() as f:
        for line in f:
            event = json.loads(line)
            stage = event.get("stage")
            verb = event.get("verb", "")
            if not (stage == "ResponseComplete" or (stage == "ResponseStarted" and verb == "watch")):
                continue
            if stage == "ResponseComplete" and verb == "watch":
                continue
            received = _timestamp(event["requestReceivedTimestamp"])
            if start <= received < end:
                counts[verb] = counts.get(verb, 0) + 1
    return counts


def spec_patch_timing(path: Path, start: float, end: float) -> dict[str, float | None]:
    """The operator's spec.replicas patches received in [start, end): when each reached the API server after the
    round's commit, and how long the server took with it (p50/p99, seconds). It splits a decision's latency
    into the operator's side (its wake-up, stats query and decision, its client's queue) and the server's."""
    received, served = [], []
    with path.open() as f:
        for line in f:
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            if event.get("stage") != "ResponseComplete" or event.get("verb") != "patch":
                continue
            if ref.get("resource") != PLURAL or ref.get("subresource"):
                continue
            at = _timestamp(event["requestReceivedTimestamp"])
            if start <= at < end:
                received.append(at - start)
                served.append(_timestamp(event["stageTimestamp"]) - at)

    def pct(values: list[float], q: float) -> float | None:
        return round(percentile(values, q), 3) if values else None

    return {
        "patches": len(received),
        "received_p50_s": pct(received, 0.5),
        "received_p99_s": pct(received, 0.99),
        "server_p50_s": pct(served, 0.5),
        "server_p99_s": pct(served, 0.99),
    }


def settle(cluster: FleetCluster, timeout: float = 300) -> float:
    """Wait until every Deployment in the namespace runs what its spec asks (kwok has started or removed the
    previous round's pods), so a round starts on a steady cluster as a burst does in production; returns the
    seconds waited."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        out = cluster.kubectl("get", "deployments", "-n", NAMESPACE, "-o", "json")
        items = json.loads(out).get("items", [])
        if all(
            (d.get("status") or {}).get("observedGeneration") == d["metadata"].get("generation")
            and all(
                int((d.get("status") or {}).get(k) or 0) == int(d["spec"].get("replicas") or 0)
                for k in ("replicas", "updatedReplicas", "readyReplicas")
            )
            for d in items
        ):
            return time.time() - t0
        time.sleep(0.5)
    raise RuntimeError(f"deployments in {NAMESPACE} not settled after {timeout} s")


def _timestamp(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def stats_query_seconds(port: int) -> dict[str, float]:
    """Mean and the share over 0.5 s of the operator's queue-stats queries, from its own histogram."""
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    total = count = under = 0.0
    for family in text_string_to_metric_families(text):
        if family.name != "civic_operator_stats_query_seconds":
            continue
        for sample in family.samples:
            if sample.name.endswith("_sum"):
                total += sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_bucket") and sample.labels.get("le") == "0.5":
                under += sample.value
    if not count:
        return {"mean": 0.0, "over_0.5s": 0.0}
    return {"mean": round(total / count, 4), "over_0.5s": round(1 - under / count, 3)}


def transactions(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
        return int(row[0]) if row else 0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def start_profiler(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on the operator: --nonblocking so the sampling does not pause it (the latency stays honest),
    --idle so time spent waiting in the event loop's selector shows too; 50 Hz: at 200 Hz py-spy took
    60 % of a core on the 2-core machine and slowed the run it measured."""
    py_spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen(
        [str(py_spy), "record", "--pid", str(pid), "--format", "raw", "--output", str(out), "--rate", "50",
         "--nonblocking", "--idle", "--threads"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def stop_profiler(proc: subprocess.Popen[bytes]) -> None:
    # SIGINT makes py-spy write what it sampled; SIGTERM would lose it.
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_fleet(cluster: FleetCluster, url: str, pools: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=true", "--timeout=300s")
    cluster.kubectl("create", "namespace", NAMESPACE)
    cluster.create_secret(NAMESPACE, "civic-db", {"DATABASE_URL": url})
    kubeconfig = cluster.operator_kubeconfig(NAMESPACE, work)
    items = [pool_manifest(i, args.max_replicas) for i in range(pools)]
    manifests = {"apiVersion": "v1", "kind": "List", "items": items}
    watch = ReplicaWatch(cluster.kubeconfig)
    t_created = time.time()
    cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(manifests))
    op_log = (work / f"operator-{pools}.log").open("ab")
    metrics_port = free_port()
    operator = subprocess.Popen(
        [sys.executable, "-m", "civic_operator.main", "--standalone", "--namespace", NAMESPACE,
         "--liveness-port", "0", "--metrics-port", str(metrics_port)],
        # Fake pods open no connections: the server-derived connection budget would cap the fleet for nothing.
        env={**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(ROOT), "LOG_LEVEL": "INFO",
             "CONNECTION_BUDGET_FROM_SERVER": "false"},
        stdout=op_log, stderr=op_log, cwd=ROOT,
    )  # fmt: skip
    meter = ProcessMeter(operator.pid)
    result: dict[str, Any] = {"pools": pools, "rounds": []}
    try:
        deadline = time.time() + 300
        while len(watch.evaluated) < pools:
            if time.time() > deadline or operator.poll() is not None:
                raise RuntimeError(f"{len(watch.evaluated)}/{pools} pools evaluated; see {op_log.name}")
            time.sleep(0.2)
        result["all_evaluated_s"] = round(time.time() - t_created, 2)
        log(f"  {pools} pools: every pool evaluated {result['all_evaluated_s']} s after creation")
        rng = random.Random(pools)
        targets = [0] * pools
        profiler = start_profiler(operator.pid, work / f"profile-{pools}.txt") if args.profile else None
        for round_no in range(1, args.rounds + 1):
            targets = next_targets(rng, targets, args.max_replicas)
            settled_s = settle(cluster) if args.settle else None
            cpu0, tx0 = meter.cpu_seconds(), transactions(url)
            t0 = set_depths(url, targets)
            latencies: dict[str, float] = {}
            deadline = t0 + 120
            while len(latencies) < pools and time.time() < deadline:
                for i, want in enumerate(targets):
                    name = f"pool-{i:03d}"
                    if name not in latencies and (at := watch.reached(name, want, t0)) is not None:
                        latencies[name] = at - t0
                time.sleep(0.1)
            t1 = time.time()
            time.sleep(2)  # the audit log is written asynchronously
            requests = audit_requests(cluster.audit_log, t0, t1)
            timing = spec_patch_timing(cluster.audit_log, t0, t1)
            values = list(latencies.values())
            entry = {
                "round": round_no,
                "decided": len(values),
                "min_s": round(min(values), 3) if values else None,
                "p50_s": round(percentile(values, 0.5), 3) if values else None,
                "p99_s": round(percentile(values, 0.99), 3) if values else None,
                "max_s": round(max(values), 3) if values else None,
                "requests": sum(requests.values()),
                "requests_by_verb": requests,
                "cpu_s": round(meter.cpu_seconds() - cpu0, 2),
                "db_transactions": transactions(url) - tx0,
                "settled_before_s": round(settled_s, 1) if settled_s is not None else None,
                "spec_patches": timing,
            }
            result["rounds"].append(entry)
            log(
                f"  {pools} pools, round {round_no}: {entry['decided']}/{pools} decided, min {entry['min_s']} s, "
                f"p50 {entry['p50_s']} s, "
                f"p99 {entry['p99_s']} s, max {entry['max_s']} s; {entry['requests']} API requests, "
                f"{entry['cpu_s']} CPU s; spec patches reached the server p50/p99 {timing['received_p50_s']}/"
                f"{timing['received_p99_s']} s after the commit, served in {timing['server_p50_s']}/"
                f"{timing['server_p99_s']} s" + (f"; settled {settled_s:.1f} s before" if settled_s is not None else "")
            )
            if len(values) < pools:
                missing = {
                    f"pool-{i:03d}": (want, watch.seen.get(f"pool-{i:03d}", [])[-3:])
                    for i, want in enumerate(targets)
                    if f"pool-{i:03d}" not in latencies
                }
                raise RuntimeError(f"round {round_no}: pools short of their replicas: {missing}; {op_log.name}")
        if profiler is not None:
            stop_profiler(profiler)
        # Idle: depths unchanged, the operator only polls (every pollSeconds per pool).
        time.sleep(3)
        cpu0, tx0, t0 = meter.cpu_seconds(), transactions(url), time.time()
        time.sleep(args.idle_seconds)
        t1 = time.time()
        cpu1, tx1 = meter.cpu_seconds(), transactions(url)
        time.sleep(2)
        idle = audit_requests(cluster.audit_log, t0, t1)
        result["idle"] = {
            "seconds": round(t1 - t0, 1),
            "api_requests_per_s": round(sum(idle.values()) / (t1 - t0), 1),
            "requests_by_verb": idle,
            "cpu_percent": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
            "db_transactions_per_s": round((tx1 - tx0) / (t1 - t0), 1),
        }
        result["stats_query_s"] = stats_query_seconds(metrics_port)
        log(f"  {pools} pools: stats query (waiting for a connection included) {result['stats_query_s']}")
        result["rss_mb"] = round(meter.rss_mb(), 1)
        result["peak_rss_mb"] = round(meter.rss_mb("VmHWM"), 1)
        log(f"  {pools} pools idle: {result['idle']}, RSS {result['rss_mb']} MB (peak {result['peak_rss_mb']})")
    finally:
        processes.stop(operator, grace=30)
        watch.stop()
    result["api_floor"] = api_floor(cluster, pools)
    log(f"  {pools} pools: the API server alone, {pools} patches from {kube.THREADS} threads: {result['api_floor']}")
    return result


def api_floor(cluster: FleetCluster, pools: int, repeat: int = 5) -> dict[str, Any]:
    """The floor under a round's decisions on this machine: the same number of pool patches sent at once by a
    bare client with the operator's concurrency (its thread count) and nothing else asking, with the
    operator stopped and the fleet's pods in place. An annotation changes per patch, so each is a real
    write through the pool's validation, storage and watchers, as a spec.replicas patch is."""
    client = kubernetes.config.new_client_from_config(str(cluster.kubeconfig))
    client.configuration.connection_pool_maxsize = kube.THREADS
    api = kubernetes.client.CustomObjectsApi(client)
    seconds = []
    for r in range(repeat):

        def patch(i: int, r: int = r) -> None:
            body = {"metadata": {"annotations": {"bench.civic-os.org/floor": str(r)}}}
            api.patch_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, f"pool-{i:03d}", body)

        t0 = time.time()
        with ThreadPoolExecutor(kube.THREADS) as pool:
            list(pool.map(patch, range(pools)))
        seconds.append(time.time() - t0)
        time.sleep(1)
    return {
        "patches": pools,
        "seconds_median": round(statistics.median(seconds), 3),
        "seconds": [round(x, 3) for x in seconds],
    }


def summary(results: list[dict[str, Any]]) -> str:
    lines = [
        "| pools | all evaluated after | decision p50 / p99 / max (median of rounds) | API req per decision | "
        "idle API req/s (per pool) | idle CPU % | idle DB tx/s | RSS / peak MB | API floor (bare client) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rounds = r["rounds"]
        med = {k: statistics.median(x[k] for x in rounds) for k in ("p50_s", "p99_s", "max_s")}
        per_decision = statistics.median(x["requests"] / max(1, x["decided"]) for x in rounds)
        idle = r["idle"]
        lines.append(
            f"| {r['pools']} | {r['all_evaluated_s']} s"
            f" | {med['p50_s']:.3f} / {med['p99_s']:.3f} / {med['max_s']:.3f} s"
            f" | {per_decision:.1f} | {idle['api_requests_per_s']} ({idle['api_requests_per_s'] / r['pools']:.2f})"
            f" | {idle['cpu_percent']} | {idle['db_transactions_per_s']} | {r['rss_mb']} / {r['peak_rss_mb']}"
            f" | {r['api_floor']['seconds_median']} s |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", default="10,100,200")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--max-replicas", type=int, default=20)
    parser.add_argument("--idle-seconds", type=float, default=30)
    parser.add_argument("--profile", action="store_true", help="py-spy the operator during the rounds")
    parser.add_argument(
        "--back-to-back",
        dest="settle",
        action="store_false",
        help="start each round 2 s after the last decision of the previous one, while its pods are still being "
        "created and deleted (default: wait until every Deployment runs what it asks)",
    )
    parser.add_argument(
        "--delete-cluster", action="store_true", help=f"delete the {CLUSTER} cluster (the built binaries stay) and exit"
    )
    args = parser.parse_args()
    if args.delete_cluster:
        FleetCluster().cp.down()
        return
    log(f"machine: {machine()}")
    cluster = FleetCluster()
    log(f"control plane {CLUSTER} (audit log {cluster.audit_log})")
    cluster.up()
    cluster.kubectl("apply", "-f", str(ROOT / "crds" / "civicworkerpool.yaml"))
    server = start_postgres()
    results = []
    try:
        work = ROOT / "bench" / "out" / "fleet"  # the operators' logs stay here
        work.mkdir(parents=True, exist_ok=True)
        for pools in (int(p) for p in args.pools.split(",")):
            url = fresh_db(server, f"fleet{pools}")
            results.append(run_fleet(cluster, url, pools, args, work))
        cluster.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--wait=false")
    finally:
        server.stop()
    out = ROOT / "bench" / "out" / "fleet_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
    print(summary(results))


if __name__ == "__main__":
    main()
