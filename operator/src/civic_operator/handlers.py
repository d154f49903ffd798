"""kopf handlers: thin wiring from events to reconcile (apply) and the autoscaler loop (decide)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import kopf

from civic_operator import GROUP, PLURAL, VERSION, budget, ledger, manifests
from civic_operator.autoscaler import PoolAutoscaler
from civic_operator.listener import InsertListener
from civic_operator.manifests import PoolRef
from civic_operator.peering import PeeringView, own_identity
from civic_operator.reconcile import reconcile
from civic_operator.stats import StatsSource

RESOURCE = (GROUP, VERSION, PLURAL)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Hung watch streams are a known kopf failure mode: bound them on both sides.
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 1.0
    settings.networking.request_timeout = 30
    settings.networking.connect_timeout = 10
    settings.posting.level = logging.INFO
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="workers.civic-os.org")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="workers.civic-os.org", key="last-handled-configuration"
    )
    settings.execution.max_workers = 8
    # libpq reads PGAPPNAME: the operator's own connections are then told apart from everyone else's
    # when the connection budget counts a server's clients (budget.others_connections).
    os.environ.setdefault("PGAPPNAME", budget.OPERATOR_APP)
    memo.stats = StatsSource()
    settings_ = memo.get("budget_settings") or ledger.settings_from_env()
    memo.ledger = ledger.Ledger(
        ledger.BudgetSettings(
            settings_.connections, settings_.reserve, settings_.from_server, memo.stats.max_conns_per_db
        ),
        ledger.limits_reader(memo.stats.connection),
    )
    memo.listener = InsertListener()
    memo.autoscalers = {}
    if "peering" not in memo:  # started by `kopf run` rather than civic-operator: act alone
        memo.peering = PeeringView(own_identity(), 0, None)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    for scaler, task in memo.autoscalers.values():
        scaler.stopped.set()
        task.cancel()
    await memo.listener.close()
    await memo.stats.close()


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
async def apply(
    spec: kopf.Spec, name: str, namespace: str | None, uid: str, patch: kopf.Patch, memo: kopf.Memo, **_: Any
) -> None:
    """Owned objects follow the pool's spec (including spec.replicas from `kubectl scale`)."""
    current = memo.autoscalers.get(uid)
    if current is not None and not current[1].done():
        # One writer per pool: its autoscaler applies the newest spec it has seen (track() runs first
        # for every event), so this handler, which can run on an older event, never undoes a newer apply.
        current[0].wake.set()
        return
    running = await reconcile(PoolRef(name, namespace or "default", uid), dict(spec))
    patch.status["selector"] = manifests.selector_string(name)
    patch.status["replicas"] = running["replicas"]
    patch.status["readyReplicas"] = running["readyReplicas"]


@kopf.on.event(*RESOURCE)
async def track(
    event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any
) -> None:
    """One autoscaler task per pool, fed the latest body. Not a kopf daemon on purpose: daemons put a
    finalizer on the pool, which then cannot be deleted (or `helm uninstall`ed) without the operator."""
    scalers: dict[str, tuple[PoolAutoscaler, asyncio.Task[None]]] = memo.autoscalers
    gone = event.get("type") == "DELETED" or body.get("metadata", {}).get("deletionTimestamp")
    current = scalers.get(uid)
    if gone:
        if current:
            current[0].stopped.set()
            scalers.pop(uid, None)
        return
    if current is None or current[1].done():
        scaler = PoolAutoscaler(
            PoolRef(name, namespace or "default", uid), memo.stats, memo.listener, memo.peering, ledger=memo.ledger
        )
        scaler.body = dict(body)
        scalers[uid] = (scaler, asyncio.create_task(scaler.run(), name=f"autoscale-{namespace}/{name}"))
    else:
        current[0].body = dict(body)


@kopf.on.event("apps", "v1", "deployments", labels={"app.kubernetes.io/managed-by": "civic-operator"})
async def follow_deployment(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A pool's Deployment changed: its autoscaler hears of it at once (ready pods, a hand edit, a
    deletion) instead of re-applying the Deployment every round to find out."""
    scalers: dict[str, tuple[PoolAutoscaler, asyncio.Task[None]]] = memo.autoscalers
    for owner in body.get("metadata", {}).get("ownerReferences") or []:
        current = scalers.get(str(owner.get("uid")))
        if current is None:
            continue
        if event.get("type") == "DELETED":
            current[0].forget_deployment()
        else:
            status = body.get("status") or {}
            current[0].observe_deployment(
                int((body.get("spec") or {}).get("replicas") or 0),
                int(status.get("replicas") or 0),
                int(status.get("readyReplicas") or 0),
            )
