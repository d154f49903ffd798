"""The connection budget on a real API server: three pools on two databases of one PostgreSQL server, their
queues deep enough to ask for 10 replicas each, the operator as a process. Their replicas x connections per
pod never exceed the budget, status and Events give the numbers, and raising the budget lets them grow, up to
what the server itself leaves.

Every pod stays on kwok's fake nodes (no process, no connection): this module needs the control plane only,
so it brings up (or reuses) that and never the shared real node, and starts its own PostgreSQL with a small
max_connections."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv.clusters import Cluster, LocalCluster, make_cluster
from devenv.pg import PostgresServer
from tests.docs.markdown import fenced_block
from tests.e2e.conftest import OperatorProcess, pool_manifest, wait_until
from tests.support.harness import insert, migrate

ROOT = Path(__file__).resolve().parents[2]
POOLS = ("alpha", "beta", "gamma")
PER_POD = 4  # dbMaxConns 4, no file pipeline (the tests' kinds)
MAX_CONNECTIONS = 60


@pytest.fixture(scope="module")
def control_plane(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = make_cluster(request.config.getoption("--cluster"))
    if isinstance(c, LocalCluster):
        c.cp.up()  # reuses the shared cluster; the real node is not needed and not touched
    else:
        c.up()
    c.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "civicworkerpool.yaml"))
    c.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "charts/civic-workers/crds/kopf-peerings.yaml")
    )
    c.kubectl("wait", "--for=condition=Established", "crd/civicworkerpools.workers.civic-os.org", "--timeout=60s")
    yield c
    if not isinstance(c, LocalCluster):
        c.teardown()


@pytest.fixture(scope="module")
def small_pg() -> Iterator[PostgresServer]:
    server = PostgresServer(settings={"max_connections": str(MAX_CONNECTIONS)})
    server.start()
    yield server
    server.destroy()


def pools(c: Cluster, ns: str) -> dict[str, dict[str, Any]]:
    items = json.loads(c.kubectl("get", "cwp", "-n", ns, "-o", "json"))["items"]
    return {p["metadata"]["name"]: p for p in items}


def replicas(c: Cluster, ns: str) -> dict[str, int]:
    return {name: int(p["spec"].get("replicas") or 0) for name, p in pools(c, ns).items()}


def events(c: Cluster, ns: str, reason: str) -> list[str]:
    items = json.loads(c.kubectl("get", "events", "-n", ns, "-o", "json"))["items"]
    return [e["message"] for e in items if e.get("reason") == reason]


def test_pools_of_one_database_server_stay_within_the_connection_budget(
    control_plane: Cluster, small_pg: PostgresServer, tmp_path: Path
) -> None:
    c = control_plane
    ns = f"e2e-budget-{int(time.time()) % 100000}"
    c.kubectl("create", "namespace", ns)
    op: OperatorProcess | None = None
    try:
        # Two databases of one server: one budget (max_connections is the server's).
        urls = {db: small_pg.create_database(f"budget_{db}_{ns.rsplit('-', 1)[1]}") for db in ("one", "two")}
        for url in urls.values():
            migrate(url)
        c.create_secret(ns, "db-one", {"DATABASE_URL": urls["one"]})
        c.create_secret(ns, "db-two", {"DATABASE_URL": urls["two"]})
        op = OperatorProcess(c, ns, c.operator_kubeconfig(ns, tmp_path), tmp_path / "operator.log").start()
        autoscaling = {"maxReplicas": 10, "targetPerReplica": 1, "pollSeconds": 1, "scaleUp": {"pods": 10}}
        where = {"alpha": "one", "beta": "two", "gamma": "one"}
        for name in POOLS:
            database: dict[str, Any] = {"secretRef": {"name": f"db-{where[name]}"}}
            if name == "alpha":
                database["connectionBudget"] = 24  # one pool sets it: it holds for the server's pools
            c.kubectl(
                "apply",
                "-f",
                "-",
                input=pool_manifest(name, ns, queues=[name], database=database, autoscaling=autoscaling),
            )
            insert(urls[where[name]], "echo", {"value": 1}, count=30, queue=name)  # 30 jobs: 10 replicas wanted

        peak = 0

        def settled(expected: dict[str, int], budget: int) -> bool:
            nonlocal peak
            now = replicas(c, ns)
            used = sum(now.values()) * PER_POD
            peak = max(peak, used)
            assert used <= budget, f"{now}: {used} connections over the budget of {budget}"
            return now == expected

        # 24 connections / 4 per pod = 6 replicas, 2 each: they want 10 each (120 connections)
        wait_until(lambda: settled(dict.fromkeys(POOLS, 2), 24), 60, "pools at their share of 24", 0.2)
        for _ in range(15):  # and they stay there
            settled(dict.fromkeys(POOLS, 2), 24)
            time.sleep(0.2)
        assert peak == 24
        for p in pools(c, ns).values():
            cb = p["status"]["connectionBudget"]
            got = (cb["budget"], cb["source"], cb["connectionsPerPod"], cb["grantedReplicas"])
            assert got == (24, "pool", 4, 2), (p["metadata"]["name"], p["spec"]["replicas"], p["status"])
            assert cb["wantedReplicas"] > 2 and cb["limited"] is True and cb["pools"] == 3
            assert cb["server"] == f"127.0.0.1:{small_pg.port}"
            cond = next(x for x in p["status"]["conditions"] if x["type"] == "BudgetLimited")
            assert cond["status"] == "True" and "connection budget 24" in cond["message"], cond
        warned = events(c, ns, "ConnectionBudget")
        assert any("connection budget 24" in m and "x 4 connections" in m and "3 pool(s)" in m for m in warned), warned
        deployments = json.loads(c.kubectl("get", "deploy", "-n", ns, "-o", "json"))["items"]
        assert sorted(d["spec"]["replicas"] for d in deployments) == [2, 2, 2]
        # The runbook's look at a capped fleet (docs/operations.md, ops-budget), in this namespace.
        look = fenced_block((ROOT / "docs" / "operations.md").read_text(), "ops-budget").splitlines()
        columns = look[0].split()[1:]
        assert columns[:3] == ["get", "cwp", "-A"], look[0]
        table = c.kubectl(*columns[:2], "-n", ns, *columns[3:]).splitlines()
        assert table[0].split() == ["POOL", "BUDGET", "GRANTED", "WANTED", "REASON"], table
        rows = {line.split()[0]: line.split() for line in table[1:]}
        assert sorted(rows) == sorted(POOLS) and all(r[1:3] == ["24", "2"] for r in rows.values()), table
        described = c.kubectl(*look[1].split("#")[0].split()[1:3], "alpha", "-n", ns)
        assert "BudgetLimited" in described and "ConnectionBudget" in described, described[-2000:]

        # Raise the budget past what the server leaves: the pools grow, up to the server's own limit.
        c.kubectl(
            "patch",
            "cwp",
            "alpha",
            "-n",
            ns,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"database": {"connectionBudget": 200}}}),
        )

        def grown() -> dict[str, Any] | None:
            status = pools(c, ns)["alpha"].get("status", {}).get("connectionBudget", {})
            return status if status.get("source") == "server" else None

        server = wait_until(grown, 30, "alpha's budget now comes from the server")
        assert f"max_connections {MAX_CONNECTIONS} - superuser_reserved 3" in server["detail"]
        assert "reserve 10" in server["detail"]
        limit = int(server["budget"])
        # 60 - 3 - 10 reserve - the operator's own (a stats pool of 2 and a LISTEN per URL: 6) - a few others
        assert 30 <= limit <= MAX_CONNECTIONS - 3 - 10 - 6, server
        share = limit // PER_POD

        def converged() -> dict[str, int] | None:
            now = replicas(c, ns)
            assert sum(now.values()) * PER_POD <= MAX_CONNECTIONS - 3 - 10 - 6, now  # never past the server's
            # equal demand: equal shares, nothing wasted
            return now if sum(now.values()) >= share - 1 and max(now.values()) - min(now.values()) <= 1 else None

        final = wait_until(converged, 60, f"pools grown to ~{share} replicas in equal shares", 0.2)
        assert sum(final.values()) > 6, final
        assert any(f"connection budget {limit}" in m for m in events(c, ns, "ConnectionBudget"))
    finally:
        if op is not None:
            op.stop()
            log = op.log()
            assert "Traceback" not in log, log[-4000:]
        c.kubectl("delete", "namespace", ns, "--wait=false", check=False)
