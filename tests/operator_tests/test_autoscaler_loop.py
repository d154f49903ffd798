"""The autoscaler loop's wake-up: an insert announced while a round is running must not be lost.

The I/O edges (Kubernetes, the database) are replaced by recorders; the loop, the decision and the
listener callback are the real ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from civic_operator import autoscaler
from civic_operator.autoscaler import PoolAutoscaler
from civic_operator.manifests import PoolRef
from civic_operator.peering import PeeringView
from civic_operator.scaling import QueueStats

pytestmark = pytest.mark.unit


class RecordingListener:
    def __init__(self) -> None:
        self.callbacks: dict[str, Any] = {}

    def subscribe(self, url: str, schema: str, key: str, callback: Any, check_pooler: bool = True) -> None:
        self.callbacks[key] = callback

    def unsubscribe(self, key: str) -> None:
        self.callbacks.pop(key, None)


class InsertDuringFirstQuery:
    """The first stats query sees an empty queue, and the insert's NOTIFY arrives just after it."""

    def __init__(self, listener: RecordingListener) -> None:
        self.listener = listener
        self.calls = 0

    async def fetch(self, url: str, schema: str, queues: list[str], *_: Any, **__: Any) -> tuple[QueueStats, float]:
        self.calls += 1
        if self.calls == 1:
            for callback in self.listener.callbacks.values():
                callback("files")
            return QueueStats(available=0, running=0), 0.001
        return QueueStats(available=1, running=0), 0.001


@pytest.fixture
def replicas_patched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    patched: list[int] = []

    async def secret_value(namespace: str, name: str, key: str) -> str:
        return "postgresql://example/db"

    async def patch_pool(namespace: str, name: str, body: dict[str, Any]) -> None:
        patched.append(body["spec"]["replicas"])

    async def patch_pool_status(namespace: str, name: str, status: dict[str, Any]) -> None:
        return None

    async def reconcile(ref: PoolRef, spec: dict[str, Any]) -> dict[str, int]:
        await asyncio.sleep(0.01)  # a round takes time; the NOTIFY lands inside it
        return {"replicas": int(spec.get("replicas") or 0), "readyReplicas": 0}

    async def scale_deployment(namespace: str, name: str, replicas: int) -> int:
        return replicas

    monkeypatch.setattr(autoscaler.kube, "secret_value", secret_value)
    monkeypatch.setattr(autoscaler.kube, "patch_pool", patch_pool)
    monkeypatch.setattr(autoscaler.kube, "patch_pool_status", patch_pool_status)
    monkeypatch.setattr(autoscaler, "reconcile", reconcile)
    monkeypatch.setattr(autoscaler.kube, "scale_deployment", scale_deployment)
    monkeypatch.setattr(kopf, "info", lambda *a, **k: None)
    return patched


POOL_AT_ZERO = {
    "metadata": {"name": "files", "namespace": "ns", "uid": "u1"},
    "spec": {
        "queues": ["files"],
        "image": "civic-runner:dev",
        "replicas": 0,
        "database": {"secretRef": {"name": "db"}},
        "autoscaling": {"minReplicas": 0, "maxReplicas": 5, "pollSeconds": 30},
    },
}


def test_insert_announced_during_a_round_starts_another(replicas_patched: list[int]) -> None:
    asyncio.run(run_until_scaled(replicas_patched))
    assert replicas_patched == [1], "the NOTIFY that arrived mid-round was dropped until the next poll"


async def run_until_scaled(replicas_patched: list[int]) -> None:
    listener = RecordingListener()
    scaler = PoolAutoscaler(PoolRef("files", "ns", "u1"), InsertDuringFirstQuery(listener), listener)  # type: ignore[arg-type]
    scaler.body = POOL_AT_ZERO
    task = asyncio.create_task(scaler.run())
    try:
        for _ in range(100):  # 1 s, far below the 30 s poll interval
            if replicas_patched:
                break
            await asyncio.sleep(0.01)
    finally:
        scaler.stopped.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class QueueWithWork:
    def __init__(self) -> None:
        self.calls = 0

    async def fetch(self, url: str, schema: str, queues: list[str], *_: Any, **__: Any) -> tuple[QueueStats, float]:
        self.calls += 1
        return QueueStats(available=50, running=0), 0.001


def test_a_standing_by_replica_does_not_scale(replicas_patched: list[int]) -> None:
    """Another replica has the higher kopf priority: no stats, no patches, until it is gone."""
    statuses: list[dict[str, Any]] = [{"other": {"priority": 9, "lastseen": "2999-01-01T00:00:00+00:00"}}]

    async def reader() -> list[dict[str, Any]]:
        return statuses

    async def scenario() -> tuple[int, list[int]]:
        listener = RecordingListener()
        stats = QueueWithWork()
        view = PeeringView("me", 1, reader, ttl=0)
        scaler = PoolAutoscaler(PoolRef("files", "ns", "u1"), stats, listener, view)  # type: ignore[arg-type]
        scaler.body = {**POOL_AT_ZERO, "spec": {**POOL_AT_ZERO["spec"], "autoscaling": {"pollSeconds": 0.05}}}
        task = asyncio.create_task(scaler.run())
        await asyncio.sleep(0.3)
        standing_by = (stats.calls, list(replicas_patched))
        statuses[0] = {}  # the other replica left
        for _ in range(100):
            if replicas_patched:
                break
            await asyncio.sleep(0.01)
        scaler.stopped.set()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return standing_by

    calls, patched = asyncio.run(scenario())
    assert (calls, patched) == (0, [])
    assert replicas_patched and replicas_patched[0] >= 1, "took over once the other replica left"


def test_spec_changes_made_by_others_wake_the_pools_autoscaler() -> None:
    """One writer per pool: a spec change reaches the autoscaler, which applies the newest spec it has seen;
    its own spec.replicas patch (the generation the patch returned) does not start another round."""

    async def scenario() -> list[bool]:
        scaler = PoolAutoscaler(PoolRef("files", "ns", "u1"), QueueWithWork(), RecordingListener())  # type: ignore[arg-type]
        woken = []
        for generation, replicas in ((1, 0), (1, 0), (2, 3), (3, 5), (4, 1)):
            if generation == 3:
                scaler._written = (3, 5)  # what evaluate() records after patching spec.replicas
            scaler.wake.clear()
            scaler.see({"metadata": {"generation": generation}, "spec": {"replicas": replicas}})
            woken.append(scaler.wake.is_set())
        return woken

    # The first body is news (nothing seen before it); a status-only event is not; `kubectl scale` is;
    # our own patch is not; a later edit is.
    assert asyncio.run(scenario()) == [True, False, True, False, True]


def test_two_pools_on_one_database_stay_within_the_connection_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two autoscaler tasks sharing one ledger: spec.replicas x connections per pod summed over both pools
    never exceeds the budget, each status says what the budget did, and a Warning Event gives the numbers."""
    from civic_operator.ledger import BudgetSettings, Ledger

    replicas: dict[str, int] = {"a": 0, "b": 0}
    generations: dict[str, int] = {"a": 1, "b": 1}
    statuses: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    sums: list[int] = []

    async def secret_value(namespace: str, name: str, key: str) -> str:
        return {"db-a": "postgresql://w@db:5432/one", "db-b": "postgresql://w@db:5432/two"}[name]

    async def patch_pool(namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        replicas[name] = body["spec"]["replicas"]
        generations[name] += 1
        sums.append(sum(replicas.values()) * 6)
        return {"metadata": {"generation": generations[name]}}

    async def patch_pool_status(namespace: str, name: str, status: dict[str, Any]) -> None:
        statuses[name] = status

    async def reconcile(ref: PoolRef, spec: dict[str, Any]) -> dict[str, int]:
        return {"replicas": int(spec.get("replicas") or 0), "readyReplicas": 0}

    async def scale_deployment(namespace: str, name: str, replicas: int) -> int:
        return replicas

    monkeypatch.setattr(autoscaler.kube, "secret_value", secret_value)
    monkeypatch.setattr(autoscaler.kube, "patch_pool", patch_pool)
    monkeypatch.setattr(autoscaler.kube, "patch_pool_status", patch_pool_status)
    monkeypatch.setattr(autoscaler, "reconcile", reconcile)
    monkeypatch.setattr(autoscaler.kube, "scale_deployment", scale_deployment)
    monkeypatch.setattr(kopf, "info", lambda *a, **k: None)
    monkeypatch.setattr(kopf, "warn", lambda body, reason, message: warnings.append(f"{reason}: {message}"))

    def body(name: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", "generation": generations[name]},
            "spec": {
                "queues": ["files"],
                "image": "civic-runner:dev",
                "replicas": replicas[name],
                "database": {"secretRef": {"name": f"db-{name}"}},  # two Secrets, two databases, one server
                "autoscaling": {"maxReplicas": 20, "targetPerReplica": 1, "pollSeconds": 0.05},
            },
        }

    async def scenario() -> None:
        book = Ledger(BudgetSettings(connections=36, from_server=False))
        scalers = {}
        for name in "ab":
            s = PoolAutoscaler(PoolRef(name, "ns", f"uid-{name}"), QueueWithWork(), RecordingListener(), ledger=book)  # type: ignore[arg-type]
            s.body = body(name)
            scalers[name] = (s, asyncio.create_task(s.run()))
        for _ in range(200):
            for name, (s, _task) in scalers.items():
                s.body = body(name)  # as kopf's watch would feed it
            if replicas == {"a": 3, "b": 3}:
                break
            await asyncio.sleep(0.01)
        for s, task in scalers.values():
            s.stopped.set()
            task.cancel()
        await asyncio.gather(*(t for _, t in scalers.values()), return_exceptions=True)
        assert not book.entries, "stopped pools leave the ledger"

    asyncio.run(scenario())
    assert replicas == {"a": 3, "b": 3}  # 36 connections / 6 per pod (dbMaxConns 4 + the pipeline's 2)
    assert max(sums) <= 36, sums
    for name in "ab":
        cb = statuses[name]["connectionBudget"]
        assert (cb["budget"], cb["connectionsPerPod"], cb["grantedReplicas"], cb["limited"]) == (36, 6, 3, True)
        assert cb["wantedReplicas"] == 20 or cb["wantedReplicas"] >= 4
        assert cb["server"] == "db:5432"
        limited = next(c for c in statuses[name]["conditions"] if c["type"] == "BudgetLimited")
        assert limited["status"] == "True" and "connection budget 36" in limited["message"]
    assert any(w.startswith("ConnectionBudget: connection budget 36") and "x 6 connections" in w for w in warnings)


def test_budget_events_follow_the_cap_not_the_demand(monkeypatch: pytest.MonkeyPatch) -> None:
    from civic_operator.budget import Budget, PoolDemand, grant

    scaler = PoolAutoscaler(PoolRef("a", "ns", "u"), QueueWithWork(), RecordingListener())  # type: ignore[arg-type]
    posted = scaler._notes  # the round's Events, posted at its end (evaluate)
    b24 = Budget(24, "pool", "24 set by the pool")

    def report(wanted: int, budget: Budget = b24) -> dict[str, Any]:
        return scaler._report_budget(
            {}, grant("ns/a", [PoolDemand("ns/a", 4, 0, wanted, 0)], budget), budget, "db:5432"
        )

    status = report(10)
    assert (status["grantedReplicas"], status["limited"], status["budget"]) == (6, True, 24)
    report(12)  # more demand, the same cap: no new Event
    assert [(k, r) for k, r, _ in posted] == [("Warning", "ConnectionBudget")]
    assert "caps ns/a at 6 of 10 replicas x 4 connections" in posted[0][2]
    report(12, Budget(32, "pool", "32 set by the pool"))  # the cap moved
    assert [k for k, _, _ in posted] == ["Warning", "Warning"] and "at 8 of 12" in posted[1][2]
    report(3)  # fits: the cap ended
    assert posted[-1][0] == "Normal" and "no longer capped: 3 replicas x 4 connections" in posted[-1][2]
    report(2)
    assert len(posted) == 3
