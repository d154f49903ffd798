"""The per-pool autoscaler loop (an asyncio task per pool, started by handlers.py; not a kopf daemon, so
pools carry no finalizer): measure, decide, apply, report.

Evaluates every `autoscaling.pollSeconds` and at once when the pool's database announces an insert
on one of its queues. Deciding is scaling.decide (pure); applying is patching spec.replicas and
reconciling the owned objects; reporting is the status, an Event per scale decision and metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import kopf

from civic_operator import kube, manifests, metrics
from civic_operator.listener import InsertListener
from civic_operator.manifests import PoolRef
from civic_operator.peering import PeeringView
from civic_operator.policy import Policy
from civic_operator.reconcile import reconcile
from civic_operator.scaling import Decision, History, QueueStats, decide
from civic_operator.stats import StatsSource, depth_cap

log = logging.getLogger("civic_operator.autoscaler")

SECRET_TTL = 60.0


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    previous: list[dict[str, Any]], *, degraded: str | None, enabled: bool, ready: int, desired: int, at: str
) -> list[dict[str, Any]]:
    """Ready / ScalingActive / Degraded, keeping lastTransitionTime while a status holds."""
    wanted = {
        "Ready": (
            "True" if ready >= desired else "False",
            "AllReplicasReady" if ready >= desired else "ReplicasNotReady",
            f"{ready}/{desired} ready",
        ),
        "ScalingActive": (
            "True" if enabled and not degraded else "False",
            "Autoscaling" if enabled else "AutoscalingDisabled",
            "scaling on queue depth" if enabled else "replicas set by spec.replicas",
        ),
        "Degraded": (
            "True" if degraded else "False",
            "StatsUnavailable" if degraded else "StatsAvailable",
            degraded or "queue stats available",
        ),
    }
    before = {c.get("type"): c for c in previous or []}
    out = []
    for ctype, (status, reason, message) in wanted.items():
        old = before.get(ctype) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else at
        out.append(
            {"type": ctype, "status": status, "reason": reason, "message": message, "lastTransitionTime": since or at}
        )
    return out


@dataclass
class PoolAutoscaler:
    ref: PoolRef
    stats: StatsSource
    listener: InsertListener
    peering: PeeringView | None = None  # None: act alone
    history: History | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _secret: tuple[float, str] | None = None
    _listen_secret: tuple[float, str] | None = None

    body: dict[str, Any] = field(default_factory=dict)  # the latest seen, kept fresh by the event handler
    stopped: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.stopped.is_set():
            # Cleared before measuring, not after: an insert announced while this round runs may come
            # after its stats query, and must start another round rather than wait for the next poll.
            self.wake.clear()
            try:
                if await self._may_act():
                    await self.evaluate(self.body)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - log, keep looping: the next round may succeed
                log.exception("evaluation failed", extra={"pool": self.ref.name, "namespace": self.ref.namespace})
            policy = Policy.from_spec((self.body.get("spec") or {}).get("autoscaling"))
            waiters = {asyncio.ensure_future(self.wake.wait()), asyncio.ensure_future(self.stopped.wait())}
            _, pending = await asyncio.wait(waiters, timeout=policy.poll_seconds, return_when=asyncio.FIRST_COMPLETED)
            for w in pending:
                w.cancel()
        self.listener.unsubscribe(self.ref.uid)

    async def _may_act(self) -> bool:
        if self.peering is None or (await self.peering.current()).active:
            return True
        # Another replica decides meanwhile; on taking over, start afresh (no sudden scale-down).
        self.history = None
        return False

    async def _database_url(self, spec: dict[str, Any]) -> str:
        if self._secret and time.monotonic() - self._secret[0] < SECRET_TTL:
            return self._secret[1]
        ref = (spec.get("database") or {}).get("secretRef") or {}
        url = await kube.secret_value(self.ref.namespace, ref["name"], ref.get("key", "DATABASE_URL"))
        self._secret = (time.monotonic(), url)
        return url

    async def _listen_url(self, spec: dict[str, Any], url: str) -> str:
        """The pool's direct URL for LISTEN (database.listenSecretRef), else its database URL."""
        ref = (spec.get("database") or {}).get("listenSecretRef") or {}
        if not ref.get("name"):
            return url
        if self._listen_secret and time.monotonic() - self._listen_secret[0] < SECRET_TTL:
            return self._listen_secret[1]
        listen = await kube.secret_value(self.ref.namespace, ref["name"], ref.get("key", "DATABASE_LISTEN_URL"))
        self._listen_secret = (time.monotonic(), listen)
        return listen

    def _on_insert(self, queues: list[str]) -> Any:
        def callback(queue: str) -> None:
            if queue in queues:
                self.wake.set()

        return callback

    async def _measure(self, spec: dict[str, Any], policy: Policy) -> tuple[QueueStats | None, str]:
        schema = str((spec.get("database") or {}).get("schema", "metadata"))
        queues = list(spec.get("queues") or [])
        labels = (self.ref.namespace, self.ref.name)
        try:
            url = await self._database_url(spec)
            db = spec.get("database") or {}
            self.listener.subscribe(
                await self._listen_url(spec, url),
                schema,
                self.ref.uid,
                self._on_insert(queues),
                check_pooler=db.get("pooler", "auto") != "session",
            )
            stats, seconds = await self.stats.fetch(
                url,
                schema,
                queues,
                policy.include_scheduled_within,
                cap=depth_cap(policy.max_replicas, policy.target_per_replica),
                with_rate=policy.target_drain_seconds is not None,
            )
        except Exception as exc:
            metrics.STATS_ERRORS.labels(*labels).inc()
            self._secret = self._listen_secret = None
            return None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        metrics.STATS_LATENCY.labels(*labels).observe(seconds)
        return stats, ""

    async def evaluate(self, body: dict[str, Any]) -> None:
        spec: dict[str, Any] = dict(body.get("spec") or {})
        status: dict[str, Any] = dict(body.get("status") or {})
        policy = Policy.from_spec(spec.get("autoscaling"))
        current = int(spec.get("replicas") or 0)
        now = time.time()
        stats, error = await self._measure(spec, policy)
        labels = (self.ref.namespace, self.ref.name)
        patch: dict[str, Any] = {}
        decision: Decision | None = None
        if policy.enabled:
            if self.history is None:  # first sight (or operator restart): no sudden scale-down
                self.history = History(seeded=(now, current), last_active=now if current else None)
            decision = decide(stats, policy, self.history, current, now, error)
            self.history = decision.history
            if decision.replicas != current:
                await kube.patch_pool(self.ref.namespace, self.ref.name, {"spec": {"replicas": decision.replicas}})
                spec["replicas"] = decision.replicas
                direction = "up" if decision.replicas > current else "down"
                metrics.DECISIONS.labels(*labels, direction).inc()
                kopf.info(
                    cast(Any, body), reason="Scaled", message=f"{current} → {decision.replicas}: {decision.reason}"
                )
                log.info(
                    "scaled",
                    extra={
                        "pool": self.ref.name,
                        "namespace": self.ref.namespace,
                        "from": current,
                        "to": decision.replicas,
                        "reason": decision.reason,
                    },
                )
                patch.update(lastScaleTime=now_iso(), lastScaleReason=decision.reason)
            elif decision.degraded and _condition(status, "Degraded") != "True":
                kopf.warn(cast(Any, body), reason="StatsUnavailable", message=decision.reason)
        # Applied every round, not only on a change: it restores hand-edited Deployments, and in Job mode it
        # starts the next Jobs as earlier ones finish. A no-op server-side apply is cheap.
        running = await reconcile(self.ref, spec)
        desired = int(spec.get("replicas") or 0)
        metrics.DESIRED.labels(*labels).set(desired)
        metrics.READY.labels(*labels).set(running["readyReplicas"])
        if stats is not None:
            depth = (
                decision.depth
                if decision and decision.depth is not None
                else stats.available + stats.running + stats.scheduled_soon
            )
            metrics.DEPTH.labels(*labels).set(depth)
            patch["depth"] = {
                "total": depth,
                "available": stats.available,
                "running": stats.running,
                "scheduledSoon": stats.scheduled_soon,
            }
            patch["oldestAvailableSeconds"] = (
                round(stats.oldest_available_seconds, 3) if stats.oldest_available_seconds is not None else None
            )
            metrics.OLDEST_AVAILABLE.labels(*labels).set(stats.oldest_available_seconds or 0.0)
            patch["completedPerSecond"] = round(stats.completed_per_second or 0.0, 3)
        patch.update(
            replicas=running["replicas"],
            readyReplicas=running["readyReplicas"],
            desiredReplicas=desired,
            selector=manifests.selector_string(self.ref.name),
            lastEvaluationTime=now_iso(),
            conditions=conditions(
                status.get("conditions") or [],
                degraded=error or None,
                enabled=policy.enabled,
                ready=running["readyReplicas"],
                desired=desired,
                at=now_iso(),
            ),
        )
        if decision is not None:
            patch["recommendation"] = decision.recommendation
        await kube.patch_pool_status(self.ref.namespace, self.ref.name, patch)


def _condition(status: dict[str, Any], ctype: str) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return str(c.get("status"))
    return None
