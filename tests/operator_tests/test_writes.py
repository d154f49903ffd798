"""Which writes a round needs (writes.py), and the autoscaler loop writing nothing while nothing changes."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from civic_operator import autoscaler, writes
from civic_operator.autoscaler import PoolAutoscaler
from civic_operator.manifests import PoolRef
from civic_operator.scaling import QueueStats
from civic_operator.writes import Written

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("mode", "manifest", "last", "observed", "now", "expected"),
    [
        ("Deployment", "a", None, True, 0.0, True),  # never applied
        ("Deployment", "a", Written("a", 0.0), False, 1.0, True),  # what runs is unknown
        ("Deployment", "a", Written("a", 0.0), True, 1.0, False),  # unchanged, known, recent
        ("Deployment", "b", Written("a", 0.0), True, 1.0, True),  # the manifest changed
        ("Deployment", "a", Written("a", 0.0), True, 60.0, True),  # resync: restores hand edits
        ("Deployment", "a", Written("a", 0.0), True, 59.9, False),
        ("Job", "", Written("", 0.0), True, 1.0, True),  # Job mode starts the next Jobs each round
    ],
)
def test_should_apply(
    mode: str, manifest: str, last: Written | None, observed: bool, now: float, expected: bool
) -> None:
    assert writes.should_apply(mode=mode, manifest=manifest, last=last, observed=observed, now=now) is expected


@pytest.mark.parametrize(
    ("mode", "template", "replicas", "last", "last_replicas", "observed", "now", "expected"),
    [
        ("Deployment", "a", 3, None, None, True, 0.0, "apply"),  # never applied: create it
        ("Deployment", "a", 3, Written("a", 0.0), 3, False, 1.0, "apply"),  # what runs is unknown
        ("Deployment", "a", 3, Written("a", 0.0), 3, True, 1.0, None),  # nothing changed
        ("Deployment", "a", 5, Written("a", 0.0), 3, True, 1.0, "scale"),  # a scale decision: one number
        ("Deployment", "a", 0, Written("a", 0.0), 3, True, 1.0, "scale"),  # to zero too
        ("Deployment", "b", 5, Written("a", 0.0), 3, True, 1.0, "apply"),  # the template changed as well
        ("Deployment", "b", 3, Written("a", 0.0), 3, True, 1.0, "apply"),  # only the template changed
        ("Deployment", "a", 5, Written("a", 0.0), 3, True, 60.0, "apply"),  # resync due: the whole manifest
        ("Deployment", "a", 5, Written("a", 0.0), None, True, 1.0, "apply"),
        ("Job", "", 5, Written("", 0.0), 3, True, 1.0, "apply"),  # Job mode reconciles its Jobs every round
    ],
)
def test_deployment_write(
    mode: str,
    template: str,
    replicas: int,
    last: Written | None,
    last_replicas: int | None,
    observed: bool,
    now: float,
    expected: str | None,
) -> None:
    assert (
        writes.deployment_write(
            mode=mode,
            template=template,
            replicas=replicas,
            last=last,
            last_replicas=last_replicas,
            observed=observed,
            now=now,
        )
        == expected
    )


def _pool(generation: int | None, replicas: int = 1) -> dict[str, Any]:
    meta = {} if generation is None else {"generation": generation}
    return {"metadata": meta, "spec": {"replicas": replicas}}


@pytest.mark.parametrize(
    ("before", "after", "ours", "expected"),
    [
        (None, _pool(1), None, True),  # first sight
        (_pool(1), _pool(1), None, False),  # a status or annotation change: same generation
        (_pool(1), _pool(2, 3), None, True),  # someone edited the spec (kubectl scale, apply)
        (_pool(1), _pool(2, 3), 2, False),  # our own spec.replicas patch
        (_pool(2), _pool(3, 4), 2, True),  # an edit after our patch
        (_pool(1), _pool(3, 4), 2, True),  # the watch skipped ours: the newest is someone else's
        (_pool(None), _pool(None), None, False),  # no generations: the specs are equal
        (_pool(None), _pool(None, 2), None, True),  # no generations: the specs differ
    ],
)
def test_spec_news(before: dict[str, Any] | None, after: dict[str, Any], ours: int | None, expected: bool) -> None:
    assert writes.spec_news(before, after, ours) is expected


@pytest.mark.parametrize(
    ("status", "last", "now", "expected"),
    [
        ("s", None, 0.0, True),
        ("s", Written("s", 0.0), 5.0, False),
        ("t", Written("s", 0.0), 5.0, True),
        ("s", Written("s", 0.0), 60.0, True),  # lastEvaluationTime is refreshed at least once a minute
    ],
)
def test_should_write_status(status: str, last: Written | None, now: float, expected: bool) -> None:
    assert writes.should_write_status(status=status, last=last, now=now) is expected


def test_fingerprint_ignores_only_the_volatile_keys() -> None:
    a = {"lastEvaluationTime": "2026-12-01T00:00:00Z", "depth": {"total": 3}}
    b = {"lastEvaluationTime": "2026-12-01T00:00:05Z", "depth": {"total": 3}}
    c = {"lastEvaluationTime": "2026-12-01T00:00:05Z", "depth": {"total": 4}}
    ignore = writes.VOLATILE_STATUS
    assert writes.fingerprint(a, ignore) == writes.fingerprint(b, ignore) != writes.fingerprint(c, ignore)
    assert writes.fingerprint(a) != writes.fingerprint(b)


class SteadyQueue:
    def __init__(self) -> None:
        self.available = 30
        self.calls = 0

    async def fetch(self, *_: Any, **__: Any) -> tuple[QueueStats, float]:
        self.calls += 1
        return QueueStats(available=self.available, running=0), 0.001


class Listener:
    def subscribe(self, *_: Any, **__: Any) -> None:
        pass

    def unsubscribe(self, *_: Any) -> None:
        pass


def test_idle_rounds_write_nothing_and_a_change_writes_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    async def secret_value(*_: Any) -> str:
        return "postgresql://example/db"

    async def patch_pool(namespace: str, name: str, patch: dict[str, Any]) -> None:
        calls.append(f"pool {patch['spec']['replicas']}")
        body["spec"]["replicas"] = patch["spec"]["replicas"]  # as the pool's next watch event brings it

    async def patch_pool_status(namespace: str, name: str, status: dict[str, Any]) -> None:
        calls.append(f"status {status['depth']['total']}")

    async def reconcile(ref: PoolRef, spec: dict[str, Any]) -> dict[str, int]:
        calls.append(f"apply {spec.get('replicas')}")
        return {"replicas": int(spec.get("replicas") or 0), "readyReplicas": 0}

    deployment_exists = True

    async def scale_deployment(namespace: str, name: str, replicas: int) -> int | None:
        calls.append(f"deployment scale {replicas}")
        return replicas if deployment_exists else None

    monkeypatch.setattr(autoscaler.kube, "secret_value", secret_value)
    monkeypatch.setattr(autoscaler.kube, "patch_pool", patch_pool)
    monkeypatch.setattr(autoscaler.kube, "patch_pool_status", patch_pool_status)
    monkeypatch.setattr(autoscaler, "reconcile", reconcile)
    monkeypatch.setattr(autoscaler.kube, "scale_deployment", scale_deployment)
    monkeypatch.setattr(kopf, "info", lambda *a, **k: None)
    monkeypatch.setattr(kopf, "warn", lambda *a, **k: None)
    body = {
        "metadata": {"name": "files", "namespace": "ns", "uid": "u1"},
        "spec": {
            "queues": ["files"],
            "image": "civic-runner:dev",
            "replicas": 3,
            "database": {"secretRef": {"name": "db"}},
            "autoscaling": {"maxReplicas": 10, "pollSeconds": 0.5},
        },
    }
    stats = SteadyQueue()
    scaler = PoolAutoscaler(PoolRef("files", "ns", "u1"), stats, Listener())  # type: ignore[arg-type]

    async def rounds(n: int) -> None:
        for _ in range(n):
            await scaler.evaluate(body)

    asyncio.run(rounds(5))
    assert calls == ["apply 3", "status 30"], "the first round applies and reports; later idle rounds write nothing"
    calls.clear()
    stats.available = 60
    asyncio.run(rounds(3))
    assert calls == ["pool 6", "deployment scale 6", "status 60"], "a scale decision patches only the replicas"
    calls.clear()
    scaler.body = body
    scaler.observe_deployment(spec_replicas=2, replicas=2, ready=2)  # someone scaled the Deployment by hand
    assert scaler.wake.is_set()
    asyncio.run(rounds(1))
    assert calls == ["apply 6"], "a hand edit of the replicas is restored at once"
    calls.clear()
    scaler.wake.clear()

    async def pods_become_ready() -> None:
        for ready in range(1, 7):  # one watch event per pod
            scaler.observe_deployment(spec_replicas=6, replicas=6, ready=ready)
        assert not scaler.wake.is_set(), "readiness is reported after a short delay, not per pod"
        await asyncio.wait_for(scaler.wake.wait(), autoscaler.READY_REPORT_DELAY + 1)
        await scaler.evaluate(body)

    asyncio.run(pods_become_ready())
    assert calls == ["status 60"], "readiness from the watch reaches the status once, without an apply"
    calls.clear()
    deployment_exists = False  # deleted between its last watch event and the next decision
    stats.available = 70
    asyncio.run(rounds(1))
    assert calls == ["pool 7", "deployment scale 7", "apply 7", "status 70"], "a missing Deployment is created again"


def test_watch_event_handlers_succeeding_are_not_logged_their_failures_are() -> None:
    import logging

    from civic_operator import handlers, logs

    quiet = logs.QuietWatchEvents()

    def record(message: str, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)

    for name in logs.WATCH_EVENT_HANDLERS:
        assert callable(getattr(handlers, name))  # the names are the handlers' own
        assert not quiet.filter(record(f"Handler '{name}' succeeded."))
        assert quiet.filter(record(f"Handler '{name}' failed with an exception.", logging.ERROR))
    assert quiet.filter(record("Handler 'apply' succeeded."))  # a spec change handled is worth a line
