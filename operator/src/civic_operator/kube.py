"""Thin Kubernetes I/O (official client, sync, run in threads): nothing here decides anything.

One ApiClient for the process, so every call reuses a kept-alive connection (a client per call opened
a TLS connection per request: at 100 pools that capped the operator near 24 requests/s), and its own
threads, as many as that connection pool holds, so Kubernetes calls neither queue behind nor starve
other users of asyncio's default executor.

The threads take calls by priority, then in order: what a scale decision waits for (the Secret read
before the stats, the spec.replicas patch) goes before the status patches and Deployment applies that
follow decisions. When 100 pools decide at once the API server answers ~300 writes; in arrival order,
a pool's spec.replicas patch waited behind earlier pools' status and Deployment writes (bench/RESULTS.md,
"Operator at fleet scale": the threads were all waiting on the API server for the whole round).
"""

from __future__ import annotations

import asyncio
import base64
import functools
import itertools
import json
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import kubernetes
from kubernetes.client.rest import ApiException

from civic_operator import GROUP, PLURAL, VERSION

FIELD_MANAGER = "civic-operator"
THREADS = 16  # concurrent Kubernetes calls (and kept-alive connections)
DECIDING, REPORTING = 0, 1  # call priorities: lower goes first

T = TypeVar("T")
_client: kubernetes.client.ApiClient | None = None


class PriorityExecutor:
    """Threads that run queued calls lowest priority number first, and in order within a priority."""

    def __init__(self, threads: int, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Callable[[], None]]] = queue.PriorityQueue()
        self._order = itertools.count()
        for i in range(threads):
            threading.Thread(target=self._work, name=f"{name}_{i}", daemon=True).start()

    def _work(self) -> None:
        while True:
            _, _, job = self._queue.get()
            job()

    def submit(self, priority: int, fn: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():  # the caller was cancelled meanwhile
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(cast(T, result))

        def job() -> None:
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        self._queue.put((priority, next(self._order), job))
        return future


_executor: PriorityExecutor | None = None


def _api_client() -> kubernetes.client.ApiClient:
    global _client
    if _client is None:
        configuration = kubernetes.client.Configuration()
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = THREADS
        _client = kubernetes.client.ApiClient(configuration)
    return _client


async def _call(fn: Callable[..., T], *args: Any, priority: int = REPORTING, **kwargs: Any) -> T:
    global _executor
    if _executor is None:
        _executor = PriorityExecutor(THREADS, "kube")
    return await _executor.submit(priority, functools.partial(fn, *args, **kwargs))


def _apps() -> kubernetes.client.AppsV1Api:
    return kubernetes.client.AppsV1Api(_api_client())


def _batch() -> kubernetes.client.BatchV1Api:
    return kubernetes.client.BatchV1Api(_api_client())


def _core() -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(_api_client())


def _custom() -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(_api_client())


def _secret_value(namespace: str, name: str, key: str) -> str:
    secret = _core().read_namespaced_secret(name, namespace)
    data = (secret.data or {}).get(key)
    if data is None:
        raise KeyError(f"secret {namespace}/{name} has no key {key!r}")
    return base64.b64decode(data).decode()


async def secret_value(namespace: str, name: str, key: str) -> str:
    return await _call(_secret_value, namespace, name, key, priority=DECIDING)


async def patch_pool(namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
    """Returns the pool as patched (its metadata.generation tells a later, staler body apart)."""
    result: Any = await _call(
        _custom().patch_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name, body, priority=DECIDING
    )
    return result if isinstance(result, dict) else {}


async def patch_pool_status(namespace: str, name: str, status: dict[str, Any]) -> None:
    await _call(
        _custom().patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": status},
    )


def _apply_deployment(manifest: dict[str, Any]) -> dict[str, Any]:
    # The generated client cannot send an apply patch; call the endpoint directly (JSON is valid YAML).
    # The answer is read as JSON, not into V1Deployment models: that conversion was a visible share of
    # the operator's CPU at 100 pools, and only the status is needed.
    meta = manifest["metadata"]
    response = _api_client().call_api(
        f"/apis/apps/v1/namespaces/{meta['namespace']}/deployments/{meta['name']}",
        "PATCH",
        query_params=[("fieldManager", FIELD_MANAGER), ("force", "true")],
        header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        body=manifest,
        auth_settings=["BearerToken"],
        _return_http_data_only=True,
        _preload_content=False,
    )
    return dict(json.loads(response.data))


async def apply_deployment(manifest: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply: creates or updates, and owns only the fields we set."""
    status = (await _call(_apply_deployment, manifest)).get("status") or {}
    return {"replicas": int(status.get("replicas") or 0), "readyReplicas": int(status.get("readyReplicas") or 0)}


def _scale_deployment(namespace: str, name: str, replicas: int) -> int | None:
    try:
        response = _api_client().call_api(
            f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale",
            "PATCH",
            query_params=[("fieldManager", FIELD_MANAGER)],
            header_params={"Content-Type": "application/merge-patch+json", "Accept": "application/json"},
            body={"spec": {"replicas": replicas}},
            auth_settings=["BearerToken"],
            _return_http_data_only=True,
            _preload_content=False,
        )
    except ApiException as e:
        if e.status == 404:
            return None
        raise
    return int((json.loads(response.data).get("status") or {}).get("replicas") or 0)


async def scale_deployment(namespace: str, name: str, replicas: int) -> int | None:
    """spec.replicas through the Deployment's scale subresource; returns the pods it has now (None: there is
    no such Deployment)."""
    return await _call(_scale_deployment, namespace, name, replicas)


async def list_jobs(namespace: str, selector: str) -> list[Any]:
    result = await _call(_batch().list_namespaced_job, namespace, label_selector=selector)
    return list(result.items)


async def create_job(manifest: dict[str, Any]) -> str:
    job = await _call(_batch().create_namespaced_job, manifest["metadata"]["namespace"], manifest)
    return str(job.metadata.name)


async def delete_job(namespace: str, name: str) -> None:
    try:
        await _call(_batch().delete_namespaced_job, name, namespace, propagation_policy="Background")
    except ApiException as e:
        if e.status != 404:
            raise


async def delete_deployment(namespace: str, name: str) -> None:
    try:
        await _call(_apps().delete_namespaced_deployment, name, namespace)
    except ApiException as e:
        if e.status != 404:
            raise


def _peering_status(namespace: str | None, name: str) -> dict[str, Any]:
    try:
        if namespace is None:
            body = _custom().get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
        else:
            body = _custom().get_namespaced_custom_object("kopf.dev", "v1", namespace, "kopfpeerings", name)
    except ApiException as exc:
        if exc.status == 404:
            return {}  # no peering object: no peers to defer to
        raise
    return dict(body.get("status") or {})


async def peering_statuses(namespaces: list[str], name: str) -> list[dict[str, Any]]:
    """The status of the ClusterKopfPeering (no namespaces) or of each namespace's KopfPeering."""
    targets: list[str | None] = list(namespaces) or [None]
    return [await _call(_peering_status, ns, name, priority=DECIDING) for ns in targets]


def watch_client() -> kubernetes.client.ApiClient:
    """A client of its own for a long-lived watch: a watch holds its connection for minutes, which the
    shared client's pool needs for the calls."""
    return kubernetes.client.ApiClient(_api_client().configuration)
