"""The Deployments this operator manages, watched without kopf: what runs reaches each pool's autoscaler.

kopf gave every Deployment watch event its full per-event processing (its per-object memory, loggers, the
diff base built from a copy of the body, the handler machinery), and a scale decision brings several such
events (our apply, then the controller's status updates as pods come and become ready). At 100 pools
deciding at once that was a large share of the operator's single event-loop thread (bench/RESULTS.md,
"Operator at fleet scale"). Here one thread lists and watches them with the label selector, parses each
event as plain JSON and hands the loop only the few numbers a pool needs (`view`, pure).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kubernetes
from kubernetes.watch.watch import iter_resp_lines

from civic_operator import kube

log = logging.getLogger("civic_operator.deployments")

SELECTOR = "app.kubernetes.io/managed-by=civic-operator"
WATCH_SECONDS = 240  # the server ends each watch within this; then it is resumed from the last resourceVersion


@dataclass(frozen=True)
class DeploymentView:
    owners: tuple[str, ...]  # uids of the owning pools
    deleted: bool
    spec_replicas: int
    replicas: int
    ready: int


def view(kind: str, obj: dict[str, Any]) -> DeploymentView | None:
    """What a watch event (or a listed item, kind "ADDED") says to the owning pools; None: nothing
    (a bookmark, an error, an object owned by no pool)."""
    if kind not in ("ADDED", "MODIFIED", "DELETED"):
        return None
    meta = obj.get("metadata") or {}
    owners = tuple(str(o["uid"]) for o in meta.get("ownerReferences") or [] if o.get("uid"))
    if not owners:
        return None
    status = obj.get("status") or {}
    return DeploymentView(
        owners=owners,
        deleted=kind == "DELETED",
        spec_replicas=int((obj.get("spec") or {}).get("replicas") or 0),
        replicas=int(status.get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
    )


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class DeploymentWatch:
    """One daemon thread per watched namespace (or one for all namespaces)."""

    def __init__(self, namespaces: list[str], deliver: Callable[[DeploymentView], None]) -> None:
        self._namespaces: list[str | None] = list(namespaces) or [None]
        self._deliver = deliver
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for namespace in self._namespaces:
            threading.Thread(
                target=self._run, args=(namespace,), name=f"deployments-{namespace or 'all'}", daemon=True
            ).start()

    def stop(self) -> None:
        # The threads notice at their next event or when the server ends the watch; they are daemons.
        self._stopped.set()

    def _send(self, kind: str, obj: dict[str, Any]) -> None:
        seen = view(kind, obj)
        if seen is not None and self._loop is not None and not self._stopped.is_set():
            self._loop.call_soon_threadsafe(self._deliver, seen)

    def _path(self, namespace: str | None) -> str:
        return f"/apis/apps/v1/namespaces/{namespace}/deployments" if namespace else "/apis/apps/v1/deployments"

    def _run(self, namespace: str | None) -> None:
        client = kube.watch_client()
        backoff = 0.5
        while not self._stopped.is_set():
            try:
                version = self._list(client, namespace)
                backoff = 0.5
                while not self._stopped.is_set():
                    version = self._watch(client, namespace, version)
            except Gone:
                continue
            except Exception as exc:  # noqa: BLE001 - an API server restart, a network error: list again
                log.warning("deployment watch lost; retrying", extra={"namespace": namespace, "error": str(exc)})
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    def _request(self, client: kubernetes.client.ApiClient, path: str, query: list[tuple[str, Any]]) -> Any:
        return client.call_api(
            path,
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
            _request_timeout=(10, WATCH_SECONDS + 30),
        )

    def _list(self, client: kubernetes.client.ApiClient, namespace: str | None) -> str:
        response = self._request(client, self._path(namespace), [("labelSelector", SELECTOR)])
        listed = json.loads(response.data)
        for item in listed.get("items") or []:
            self._send("ADDED", item)
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    def _watch(self, client: kubernetes.client.ApiClient, namespace: str | None, version: str) -> str:
        query = [
            ("labelSelector", SELECTOR),
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", WATCH_SECONDS),
        ]
        response = self._request(client, self._path(namespace), query)
        try:
            for line in iter_resp_lines(response):
                if self._stopped.is_set():
                    break
                version = self._event(line, version)
        finally:
            response.release_conn()
        return version

    def _event(self, line: str, version: str) -> str:
        if not line.strip():
            return version
        event = json.loads(line)
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise RuntimeError(f"watch error: {obj.get('reason')}: {obj.get('message')}")
        self._send(str(kind), obj)
        return str((obj.get("metadata") or {}).get("resourceVersion") or version)
