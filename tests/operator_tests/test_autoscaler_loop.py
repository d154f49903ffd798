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

    monkeypatch.setattr(autoscaler.kube, "secret_value", secret_value)
    monkeypatch.setattr(autoscaler.kube, "patch_pool", patch_pool)
    monkeypatch.setattr(autoscaler.kube, "patch_pool_status", patch_pool_status)
    monkeypatch.setattr(autoscaler, "reconcile", reconcile)
    monkeypatch.setattr(kopf, "info", lambda *a, **k: None)
    return patched


POOL_AT_ZERO = {
    "metadata": {"name": "files", "namespace": "ns", "uid": "u1"},
    "spec": {
        "queues": ["files"],
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


def test_spec_changes_wake_the_pools_autoscaler_instead_of_applying(monkeypatch: pytest.MonkeyPatch) -> None:
    """One writer per pool: kopf's change handler may run on an older event than the autoscaler has seen."""
    from civic_operator import handlers

    applied: list[dict[str, Any]] = []

    async def reconcile(ref: PoolRef, spec: dict[str, Any]) -> dict[str, int]:
        applied.append(spec)
        return {"replicas": 0, "readyReplicas": 0}

    monkeypatch.setattr(handlers, "reconcile", reconcile)

    async def scenario() -> tuple[bool, bool]:
        listener = RecordingListener()
        scaler = PoolAutoscaler(PoolRef("files", "ns", "u1"), QueueWithWork(), listener)  # type: ignore[arg-type]
        running = asyncio.get_running_loop().create_future()  # stands for the live task
        memo = kopf.Memo(autoscalers={"u1": (scaler, running)})
        await handlers.apply(
            spec={"replicas": 2}, name="files", namespace="ns", uid="u1", patch=kopf.Patch(), memo=memo
        )
        woken = scaler.wake.is_set()
        # Without a live autoscaler (before the first event reached track()), the handler applies itself.
        await handlers.apply(
            spec={"replicas": 3}, name="files", namespace="ns", uid="u2", patch=kopf.Patch(), memo=memo
        )
        running.cancel()
        return woken, applied == [{"replicas": 3}]

    assert asyncio.run(scenario()) == (True, True)
