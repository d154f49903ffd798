"""The Grafana dashboard's PromQL against real `/metrics` output of a runner and of the operator.

- Runner: a real Runner (tests/support/harness.py InProcessRunner, its HTTP server on a free port) works jobs of
  several outcomes on a real PostgreSQL, and has its database connections killed once (a database error); its
  `/metrics` is read over HTTP.
- Operator, twice. (1) A real `civic-operator` process, given credentials for an API server address where nothing
  listens (as tests/images does: kopf starts and retries), serves `/metrics`: every metric family the dashboard
  uses must be there. With no API server it evaluates no pool, so its labelled metrics have no samples yet.
  (2) For the samples and their labels, the operator's own autoscaler code (`PoolAutoscaler.evaluate`, with the
  real `StatsSource` querying the same PostgreSQL) evaluates two pools, one that scales up and one whose stats
  query fails; only the Kubernetes calls are recorders. Its registry (civic_operator.metrics.REGISTRY) is then
  served with prometheus_client's `start_http_server`, as main() serves it, and read over HTTP.

Every metric name in the dashboard's expressions and variable queries must have samples in the runner's or the
operator's output, and every label an expression groups or filters by must be on those samples. A real Prometheus
is not run (it cannot be installed here cheaply), so the PromQL's syntax and results are not evaluated.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import kopf
import psycopg
import pytest
from civic_operator import autoscaler, ledger, metrics
from civic_operator.autoscaler import PoolAutoscaler
from civic_operator.manifests import PoolRef
from civic_operator.stats import StatsSource
from prometheus_client import start_http_server
from prometheus_client.parser import text_string_to_metric_families

from devenv.pg import free_port
from tests.docs.markdown import ROOT
from tests.support.harness import InProcessRunner, insert, migrate, query, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.integration

DASHBOARD = ROOT / "charts" / "civic-workers" / "dashboards" / "civic-workers.json"
METRIC = re.compile(r"\b(civic_(?:runner|operator)_[a-z0-9_]+)\b")


def expressions() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def labels_used(expr: str) -> set[str]:
    """Labels an expression groups by, filters on, or asks label_values() for."""
    used: set[str] = set()
    for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr):
        used |= {g.strip() for g in group.split(",") if g.strip()}
    for selector in re.findall(r"\{([^}]*)\}", expr):
        used |= set(re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", selector))
    m = re.search(r"label_values\(\s*[a-z0-9_]+\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)", expr)
    if m:
        used.add(m.group(1))
    return used


def samples(text: str) -> dict[str, set[str]]:
    """Sample name -> the label names its samples carry."""
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def answer(url: str) -> str | None:
    try:
        return get(url)
    except OSError:
        return None


def family_samples(text: str) -> set[str]:
    """The sample names each metric family of an exposition will have once it has samples."""
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "summary": ["_sum", "_count"]}
    return {f.name + suffix for f in text_string_to_metric_families(text) for suffix in suffixes.get(f.type, [""])}


# --- the runner ------------------------------------------------------------------------------------


def runner_metrics(url: str) -> str:
    migrate(url)
    port = free_port()
    insert(url, "noop", count=3)
    insert(url, "fail", max_attempts=1)
    insert(url, "permanent")
    with InProcessRunner(url, registry, http_port=port, http_host="127.0.0.1", fetch_poll_interval=0.2):
        wait_for(
            lambda: query(url, "SELECT count(*) FROM metadata.river_job WHERE finalized_at IS NULL") == [(0,)],
            20,
            what="the jobs finished",
        )
        # A database error: the runner's connections are killed; its next claim or election fails and retries.
        query(
            url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        endpoint = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: "civic_runner_db_errors_total{" in get(endpoint), 20, what="a database error counted")
        return get(endpoint)


# --- the operator ----------------------------------------------------------------------------------


def operator_process_metrics(tmp_path: Path) -> str:
    """`civic-operator`'s /metrics, the process started as the chart starts it, against no API server."""
    kubeconfig = tmp_path / "kubeconfig"
    server = f"https://127.0.0.1:{free_port()}"  # nothing listens there
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "test-token"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "civic"}}],
                "current-context": "c",
            }
        )
    )
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "METRICS_PORT": str(port), "LIVENESS_PORT": "0"}
    log = tmp_path / "operator.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "civic_operator.main", "--standalone", "--namespace", "civic"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        endpoint = f"http://127.0.0.1:{port}/metrics"
        text: str = wait_for(lambda: proc.poll() is None and answer(endpoint), 60, what="civic-operator /metrics")
        return text
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def pool(name: str, schema: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "civic", "uid": f"uid-{name}"},
        "spec": {
            "queues": ["files"],
            "replicas": 0,
            "database": {"secretRef": {"name": "db"}, "schema": schema},
            "autoscaling": {"minReplicas": 0, "maxReplicas": 5, "targetPerReplica": 10},
        },
    }


class NoListener:
    def subscribe(self, *args: Any, **kwargs: Any) -> None:
        return None

    def unsubscribe(self, key: str) -> None:
        return None


def operator_metrics(url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    insert(url, "thumbnail_generate", count=30, queue="files")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE metadata.river_job SET scheduled_at = now() - interval '42 seconds' WHERE queue = 'files'")

    async def secret_value(namespace: str, name: str, key: str) -> str:
        return url

    async def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    async def reconcile(ref: PoolRef, spec: dict[str, Any]) -> dict[str, int]:
        return {"replicas": int(spec.get("replicas") or 0), "readyReplicas": 1}

    monkeypatch.setattr(autoscaler.kube, "secret_value", secret_value)
    monkeypatch.setattr(autoscaler.kube, "patch_pool", nothing)
    monkeypatch.setattr(autoscaler.kube, "patch_pool_status", nothing)

    async def scale_deployment(namespace: str, name: str, replicas: int) -> int:
        return replicas

    monkeypatch.setattr(autoscaler.kube, "scale_deployment", scale_deployment)
    monkeypatch.setattr(autoscaler, "reconcile", reconcile)
    monkeypatch.setattr(kopf, "info", lambda *a, **k: None)
    monkeypatch.setattr(kopf, "warn", lambda *a, **k: None)

    async def evaluate() -> None:
        stats = StatsSource()
        # The connection budget as the operator keeps it, its server numbers read from the real server.
        book = ledger.Ledger(ledger.BudgetSettings(connections=1000), ledger.limits_reader(stats.connection))
        try:
            for name, schema in (("files", "metadata"), ("broken", "no_such_schema")):
                body = pool(name, schema)
                scaler = PoolAutoscaler(
                    PoolRef(name, "civic", f"uid-{name}"),
                    stats,  # type: ignore[arg-type]
                    NoListener(),  # type: ignore[arg-type]
                    ledger=book,
                )
                scaler.body = body
                # Two rounds, as the loop runs them (the replicas stay as found: reconcile is a stand-in).
                for _ in range(2):
                    await scaler.evaluate(body)
                    await asyncio.sleep(0.01)
        finally:
            await stats.close()

    asyncio.run(evaluate())
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.REGISTRY)
    try:
        return get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.shutdown()
        thread.join(5)


# --- the check -------------------------------------------------------------------------------------


def test_dashboard_metrics_exist(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    runner_text = runner_metrics(db_url)
    process_families = family_samples(operator_process_metrics(tmp_path))
    operator_text = operator_metrics(db_url, monkeypatch)
    exposed = {**samples(runner_text), **samples(operator_text)}
    # The operator's code did what the dashboard shows: a scale-up, a failed stats query, the oldest job's age.
    ups = re.search(
        r'civic_operator_scale_decisions_total\{direction="up",namespace="civic",pool="files"\} ([0-9.]+)',
        operator_text,
    )
    assert ups and float(ups.group(1)) >= 1, operator_text
    assert 'civic_operator_stats_errors_total{namespace="civic",pool="broken"} 2.0' in operator_text
    oldest = re.search(
        r'civic_operator_oldest_available_seconds\{namespace="civic",pool="files"\} ([0-9.]+)', operator_text
    )
    assert oldest and float(oldest.group(1)) >= 42, operator_text
    problems = []
    exprs = expressions()
    assert len(exprs) >= 15
    for expr in exprs:
        names = set(METRIC.findall(expr))
        assert names, f"no civic_* metric in {expr}"
        for name in names:
            if name.startswith("civic_operator_") and name not in process_families:
                problems.append(f"{name}: the civic-operator process does not expose it (in {expr})")
            if name not in exposed:
                problems.append(f"{name}: no such samples in /metrics (in {expr})")
                continue
            missing = labels_used(expr) - exposed[name]
            if missing:
                problems.append(f"{name}: no label {sorted(missing)} on its samples (in {expr})")
    assert not problems, "\n".join(problems)
