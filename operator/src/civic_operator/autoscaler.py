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

from civic_operator import budget, kube, manifests, metrics, writes
from civic_operator.budget import Grant, PoolDemand
from civic_operator.ledger import Ledger
from civic_operator.listener import InsertListener
from civic_operator.manifests import PoolRef
from civic_operator.peering import PeeringView
from civic_operator.policy import Policy
from civic_operator.reconcile import reconcile
from civic_operator.scaling import Decision, History, QueueStats, capped, decide
from civic_operator.stats import StatsSource, depth_cap

log = logging.getLogger("civic_operator.autoscaler")

SECRET_TTL = 60.0
READY_REPORT_DELAY = 1.0  # seconds: readiness changes of a pool's pods reach its status together


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    previous: list[dict[str, Any]],
    *,
    degraded: str | None,
    enabled: bool,
    ready: int,
    desired: int,
    at: str,
    budget_limit: str | None = None,
) -> list[dict[str, Any]]:
    """Ready / ScalingActive / Degraded / BudgetLimited, keeping lastTransitionTime while a status holds."""
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
        "BudgetLimited": (
            "True" if budget_limit else "False",
            "ConnectionBudget" if budget_limit else "WithinBudget",
            budget_limit or "replicas not capped by the connection budget",
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
    ledger: Ledger | None = None  # None: no connection budget
    history: History | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _secret: tuple[float, str] | None = None
    _budget_note: tuple[Any, ...] | None = None  # what the last ConnectionBudget event said
    _written: tuple[int, int] | None = None  # (metadata.generation, spec.replicas) of our last patch
    _listen_secret: tuple[float, str] | None = None

    body: dict[str, Any] = field(default_factory=dict)  # the latest seen, kept fresh by the event handler
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    # What runs, as the last apply returned it or the Deployment's watch events report it (None: unknown).
    observed: dict[str, int] | None = None
    _applied: writes.Written | None = None
    _applied_replicas: int | None = None  # the replicas of our last Deployment apply
    _status: writes.Written | None = None
    _sent: dict[str, Any] = field(default_factory=dict)  # every status field this autoscaler has written
    _ready_report: asyncio.TimerHandle | None = None
    _notes: list[tuple[str, str, str]] = field(default_factory=list)  # the round's Events: (type, reason, message)

    def _demand(
        self, spec: dict[str, Any], policy: Policy, wanted: int, held: int, step: int | None = None
    ) -> PoolDemand:
        return PoolDemand(
            f"{self.ref.namespace}/{self.ref.name}",
            budget.connections_per_pod(spec),
            policy.min_replicas,
            wanted,
            held,
            autoscaled=policy.enabled,
            step=step,
        )

    async def run(self) -> None:
        if self.ledger is not None:
            spec = dict(self.body.get("spec") or {})
            held = int(spec.get("replicas") or 0)
            policy = Policy.from_spec(spec.get("autoscaling"))
            explicit = (spec.get("database") or {}).get("connectionBudget")
            self.ledger.register(
                self.ref.uid,
                self._demand(spec, policy, policy.max_replicas if policy.enabled else held, held),
                self.wake.set,
                int(explicit) if explicit is not None else None,
            )
        try:
            await self._loop()
        finally:
            if self.ledger is not None:
                self.ledger.forget(self.ref.uid)

    async def _loop(self) -> None:
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
        # Another replica decides meanwhile; on taking over, start afresh (no sudden scale-down) and
        # write again what that replica may have changed.
        self.history = None
        self._applied = self._status = None
        self._sent = {}
        return False

    async def _database_url(self, spec: dict[str, Any]) -> str:
        if self._secret and time.monotonic() - self._secret[0] < SECRET_TTL:
            return self._secret[1]
        ref = (spec.get("database") or {}).get("secretRef") or {}
        url = await kube.secret_value(self.ref.namespace, ref["name"], ref.get("key", "DATABASE_URL"))
        self._secret = (time.monotonic(), url)
        return url

    def see(self, body: dict[str, Any]) -> None:
        """A newer body from the watch; a spec change someone else made starts a round now."""
        previous, self.body = self.body, body
        if writes.spec_news(previous, body, self._written[0] if self._written else None):
            self.wake.set()

    def observe_deployment(self, spec_replicas: int, replicas: int, ready: int) -> None:
        """The pool's Deployment changed (pods became ready, or someone edited it): report it now, and
        restore a replica count that is not the one this operator applied."""
        # Compared with what we applied last, not with the body: the Deployment's events (deployments.py)
        # can arrive before kopf's watch brings the pool's body with the spec.replicas that apply followed,
        # and would then be taken for a hand edit (one more apply and round).
        applied = self._applied_replicas
        if applied is None:
            applied = int((self.body.get("spec") or {}).get("replicas") or 0)
        seen = {"replicas": replicas, "readyReplicas": ready}
        if spec_replicas != applied:
            self._applied = None
            self.observed = seen
            self.wake.set()
        elif seen != self.observed:
            # Pods become ready one by one: one round per READY_REPORT_DELAY reports them all, rather than a
            # status write per pod.
            self.observed = seen
            if self._ready_report is None or self._ready_report.cancelled():
                self._ready_report = asyncio.get_running_loop().call_later(READY_REPORT_DELAY, self._report_ready)

    def _report_ready(self) -> None:
        self._ready_report = None
        self.wake.set()

    def forget_deployment(self) -> None:
        """The Deployment was deleted: the next round creates it again."""
        self.observed = None
        self._applied = None
        self.wake.set()

    async def _reconcile(self, spec: dict[str, Any]) -> dict[str, int]:
        mode = str(spec.get("mode", "Deployment"))
        # The Deployment is a pure function of the spec (manifests.deployment): the spec stands for it.
        template = writes.fingerprint(spec, ignore=frozenset({"replicas"})) if mode != "Job" else ""
        replicas = int(spec.get("replicas") or 0)
        now = time.monotonic()
        write = writes.deployment_write(
            mode=mode,
            template=template,
            replicas=replicas,
            last=self._applied,
            last_replicas=self._applied_replicas,
            observed=self.observed is not None,
            now=now,
        )
        if write is None and self.observed is not None:
            return dict(self.observed)
        if write == "scale" and self.observed is not None:
            name = manifests.object_name(self.ref.name)
            pods = await kube.scale_deployment(self.ref.namespace, name, replicas)
            if pods is not None:  # else deleted meanwhile: the apply below creates it again
                self._applied_replicas = replicas
                # Ready pods are the watch's to report (observe_deployment).
                self.observed = {"replicas": pods, "readyReplicas": self.observed.get("readyReplicas", 0)}
                return dict(self.observed)
        running = await reconcile(self.ref, spec)
        self._applied = writes.Written(template, now)
        self._applied_replicas = replicas
        self.observed = dict(running) if mode != "Job" else None
        return running

    async def _write_status(self, patch: dict[str, Any]) -> None:
        # Compared as the status would read after the merge patch, so a field sent once (lastScaleTime)
        # and absent from later patches is no change.
        merged = {**self._sent, **patch}
        content = writes.fingerprint(merged, writes.VOLATILE_STATUS)
        now = time.monotonic()
        if writes.should_write_status(status=content, last=self._status, now=now):
            await kube.patch_pool_status(self.ref.namespace, self.ref.name, patch)
            self._status = writes.Written(content, now)
            self._sent = merged

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

    def _fresh_replicas(self, body: dict[str, Any], replicas: int) -> int:
        """spec.replicas, unless the body predates our own last patch (a wake-up can come before the watch
        delivers it): then what we wrote, so neither the decision nor the budget's ledger goes by a stale count."""
        generation = (body.get("metadata") or {}).get("generation")
        if self._written and isinstance(generation, int) and generation < self._written[0]:
            return self._written[1]
        return replicas

    async def _claim(
        self, spec: dict[str, Any], policy: Policy, wanted: int, current: int, cap: bool, step: int | None = None
    ) -> tuple[Grant, budget.Budget, str] | None:
        """The budget's grant for `wanted` replicas, at most `step` this round (None: no ledger, or the
        pool's URL is unknown)."""
        if self.ledger is None or self._secret is None:
            return None
        url = self._secret[1]
        server = budget.server_key(url)
        db = spec.get("database") or {}
        await self.ledger.refresh(server, url)
        explicit = db.get("connectionBudget")
        from_server = db.get("connectionBudgetFromServer")
        grant, found = self.ledger.claim(
            self.ref.uid,
            self._demand(spec, policy, wanted, current, step),
            self.wake.set,
            server=server,
            url=url,
            schema=str(db.get("schema", "metadata")),
            explicit=int(explicit) if explicit is not None else None,
            from_server=bool(from_server) if from_server is not None else None,
            cap=cap,
        )
        return grant, found, server

    def _report_budget(self, body: dict[str, Any], grant: Grant, found: budget.Budget, server: str) -> dict[str, Any]:
        """Status fields, metrics and (when the cap starts, changes or ends) an Event and a log line."""
        labels = (self.ref.namespace, self.ref.name)
        metrics.BUDGET_CAPPED.labels(*labels).set(grant.wanted - grant.replicas)
        metrics.CONNECTIONS_USED.labels(server).set(grant.used_connections)
        metrics.CONNECTIONS_WANTED.labels(server).set(grant.wanted_connections)
        metrics.CONNECTION_BUDGET.labels(server).set(-1 if found.connections is None else found.connections)
        # A new Event when the cap starts, moves or ends; not when only the demand behind it moves.
        note = (True, grant.replicas, found.connections) if grant.limited else (False,)
        if note != self._budget_note and (grant.limited or self._budget_note is not None):
            extra = {
                "pool": self.ref.name,
                "namespace": self.ref.namespace,
                "server": server,
                "budget": found.connections,
                "budget_source": found.source,
                "granted": grant.replicas,
                "wanted": grant.wanted,
                "per_pod": grant.per_pod,
                "used_connections": grant.used_connections,
                "wanted_connections": grant.wanted_connections,
            }
            if grant.limited:
                self._notes.append(("Warning", "ConnectionBudget", grant.reason))
                log.warning("capped by the connection budget", extra={**extra, "reason": grant.reason})
            else:
                message = (
                    f"no longer capped: {grant.replicas} replicas x {grant.per_pod} connections within the "
                    f"budget of {found.connections} on {server} ({found.detail})"
                )
                self._notes.append(("Normal", "ConnectionBudget", message))
                log.info("connection budget no longer caps", extra=extra)
        self._budget_note = note
        return {
            "server": server,
            "budget": found.connections,
            "source": found.source,
            "detail": found.detail,
            "connectionsPerPod": grant.per_pod,
            "wantedReplicas": grant.wanted,
            "grantedReplicas": grant.replicas,
            "fairShare": grant.share,
            "pools": grant.pools,
            "wantedConnections": grant.wanted_connections,
            "usedConnections": grant.used_connections,
            "limited": grant.limited,
            "reason": grant.reason,
        }

    async def evaluate(self, body: dict[str, Any]) -> None:
        self._notes = []
        try:
            await self._evaluate(body)
        finally:
            # The round's Events (Scaled, StatsUnavailable, ConnectionBudget) go out at its end, after the
            # status: kopf posts an Event at once, and posted mid-round, 100 pools' Scaled events were as many
            # API writes as their spec.replicas patches, at the same moment (the audit log of a 100-pool round
            # in bench/fleet_scale.py), so the next pools' patches waited for them.
            for kind, reason, message in self._notes:
                post = kopf.warn if kind == "Warning" else kopf.info
                post(cast(Any, body), reason=reason, message=message)
            self._notes = []

    async def _evaluate(self, body: dict[str, Any]) -> None:
        spec: dict[str, Any] = dict(body.get("spec") or {})
        status: dict[str, Any] = dict(body.get("status") or {})
        policy = Policy.from_spec(spec.get("autoscaling"))
        current = self._fresh_replicas(body, int(spec.get("replicas") or 0))
        spec["replicas"] = current
        now = time.time()
        stats, error = await self._measure(spec, policy)
        labels = (self.ref.namespace, self.ref.name)
        patch: dict[str, Any] = {}
        decision: Decision | None = None
        if policy.enabled:
            if self.history is None:  # first sight (or operator restart): no sudden scale-down
                self.history = History(seeded=(now, current), last_active=now if current else None)
            decision = decide(stats, policy, self.history, current, now, error)
            claimed = await self._claim(
                spec,
                policy,
                max(decision.recommendation, decision.replicas),
                current,
                cap=not decision.degraded,
                step=decision.replicas,
            )
            if claimed is not None and claimed[0].replicas < decision.replicas:
                decision = capped(decision, claimed[0].replicas, current, now, claimed[0].reason)
            self.history = decision.history
            if decision.replicas != current:
                result = await kube.patch_pool(
                    self.ref.namespace, self.ref.name, {"spec": {"replicas": decision.replicas}}
                )
                generation = ((result or {}).get("metadata") or {}).get("generation")
                if isinstance(generation, int):
                    self._written = (generation, decision.replicas)
                spec["replicas"] = decision.replicas
                direction = "up" if decision.replicas > current else "down"
                metrics.DECISIONS.labels(*labels, direction).inc()
                self._notes.append(("Normal", "Scaled", f"{current} → {decision.replicas}: {decision.reason}"))
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
                self._notes.append(("Warning", "StatsUnavailable", decision.reason))
        else:
            claimed = await self._claim(spec, policy, current, current, cap=True)  # hand-set: counted, not capped
        budget_limit = None
        if claimed is not None:
            patch["connectionBudget"] = self._report_budget(body, *claimed)
            budget_limit = claimed[0].reason if claimed[0].limited else None
        if self.ledger is not None:
            self.ledger.settle(self.ref.uid, int(spec.get("replicas") or 0))
        # Applied when the manifest changed, its state is unknown, or once a minute (writes.py); in Job mode
        # every round, which starts the next Jobs as earlier ones finish.
        running = await self._reconcile(spec)
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
                # Ours when we wrote some: the body can lag behind our last write by an event.
                self._sent.get("conditions") or status.get("conditions") or [],
                degraded=error or None,
                enabled=policy.enabled,
                ready=running["readyReplicas"],
                desired=desired,
                at=now_iso(),
                budget_limit=budget_limit,
            ),
        )
        if decision is not None:
            patch["recommendation"] = decision.recommendation
        await self._write_status(patch)


def _condition(status: dict[str, Any], ctype: str) -> str | None:
    for c in status.get("conditions") or []:
        if c.get("type") == ctype:
            return str(c.get("status"))
    return None
