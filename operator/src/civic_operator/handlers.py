"""kopf handlers: thin wiring from events to reconcile (apply) and the autoscaler loop (decide)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import Any

import kopf

from civic_operator import GROUP, PLURAL, VERSION, budget, ledger
from civic_operator.autoscaler import PoolAutoscaler
from civic_operator.deployments import DeploymentView, DeploymentWatch
from civic_operator.listener import InsertListener
from civic_operator.manifests import PoolRef
from civic_operator.peering import PeeringView, own_identity
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
    # Started by civic-operator, the namespaces it watches; by `kopf run`, all of them.
    memo.deployments = DeploymentWatch(
        list(memo.get("namespaces") or []), functools.partial(follow_deployment, memo.autoscalers)
    )
    memo.deployments.start()
    if "peering" not in memo:  # started by `kopf run` rather than civic-operator: act alone
        memo.peering = PeeringView(own_identity(), 0, None)


@kopf.on.cleanup()
async def shutdown(memo: kopf.Memo, **_: Any) -> None:
    memo.deployments.stop()
    for scaler, task in memo.autoscalers.values():
        scaler.stopped.set()
        task.cancel()
    await memo.listener.close()
    await memo.stats.close()


@kopf.on.event(*RESOURCE)
async def track(
    event: kopf.RawEvent, body: kopf.Body, name: str, namespace: str | None, uid: str, memo: kopf.Memo, **_: Any
) -> None:
    """One autoscaler task per pool, fed the latest body; the only writer of the pool's objects and status.
    Its first round applies the spec (what a resume/create handler would do) and a spec change wakes it.

    Not a kopf daemon on purpose: daemons put a finalizer on the pool, which then cannot be deleted (or
    `helm uninstall`ed) without the operator. And no kopf change handlers (on.create/update/resume): kopf
    stores their progress and diff base in annotations, one more patch per spec change, so per scale
    decision, and the watch event that patch brings back. At 100 pools deciding at once those events were
    a visible share of the operator's CPU (bench/RESULTS.md, "Operator at fleet scale")."""
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
        current[0].see(dict(body))


def follow_deployment(scalers: dict[str, tuple[PoolAutoscaler, asyncio.Task[None]]], seen: DeploymentView) -> None:
    """A pool's Deployment changed: its autoscaler hears of it at once (ready pods, a hand edit, a
    deletion) instead of re-applying the Deployment every round to find out."""
    for owner in seen.owners:
        current = scalers.get(owner)
        if current is None:
            continue
        if seen.deleted:
            current[0].forget_deployment()
        else:
            current[0].observe_deployment(seen.spec_replicas, seen.replicas, seen.ready)
